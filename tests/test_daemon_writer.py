"""One writer per journal, even when the journal folder is deleted and recreated under a writer.

In-process and fast: a real journal file, the emulator over HTTP, and the folder really
removed. The same attack with two daemon processes is in test_daemon_e2e.py.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import reconcile_now, tick
from groupsync.config import load_settings
from groupsync.daemon import Daemon
from groupsync.emulator import Emulator
from groupsync.journal import Journal, JournalReplaced
from groupsync.loader import Loaded
from groupsync.outcomes import ChangeStatus, Failure, RunOutcome
from groupsync.plan import Change
from groupsync.reconcile import RunOptions, Session
from groupsync.sdnotify import Notifier
from groupsync.secret import Secret
from groupsync.spec import load_spec
from groupsync.writer import JournalSeat, SeatState

pytestmark = pytest.mark.anyio
TOKEN = "test-token"


def replace_folder(folder: Path) -> None:
    """What the attack did: `rm -rf` the journal's folder, then `mkdir` it again."""
    shutil.rmtree(folder)
    folder.mkdir()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


def test_the_check_passes_until_the_folder_is_replaced(state: Path) -> None:
    with Journal.open(state / "journal.db") as journal, journal.writer_lock():
        journal.ensure_still_held()
        replace_folder(state)
        with pytest.raises(JournalReplaced, match=r"journal\.db is no longer the file") as info:
            journal.ensure_still_held()
        assert "journal.db.lock is no longer the lock" in str(info.value)


def test_a_replaced_lock_file_alone_is_caught(state: Path) -> None:
    with Journal.open(state / "journal.db") as journal, journal.writer_lock():
        lock = state / "journal.db.lock"
        lock.unlink()
        lock.write_text("")  # a second writer could flock this one
        with pytest.raises(JournalReplaced, match=r"journal\.db\.lock is no longer") as info:
            journal.ensure_still_held()
        assert "journal.db is no longer" not in str(info.value)


def test_the_lock_is_refused_on_a_journal_replaced_since_it_was_opened(state: Path) -> None:
    with Journal.open(state / "journal.db") as journal:
        replace_folder(state)
        Journal.open(state / "journal.db").close()  # somebody else's new journal
        with pytest.raises(JournalReplaced), journal.writer_lock():
            pytest.fail("locked a journal that is not the one open")
    # The refused attempt left the new journal's lock free.
    with Journal.open(state / "journal.db") as other, other.writer_lock():
        pass


def write_config(tmp_path: Path, base_url: str, spec: str) -> Path:
    (tmp_path / "spec.yaml").write_text(spec)
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        f"api:\n  base_url: {base_url}\n  max_requests_per_s: 1000\n"
        "spec:\n  path: spec.yaml\n"
        "schedule:\n  every: 5m\n  jitter: 0s\njournal:\n  path: state/journal.db\n"
    )
    return config


CHESS = "groups:\n  chess:\n    name: Chess Club\n"


async def test_apply_stops_before_the_next_write_phase(
    tmp_path: Path, state: Path, emulator: Emulator
) -> None:
    """The create (phase 0) is in flight when the folder goes; the rename (phase 1) is not sent."""
    config = write_config(tmp_path, emulator.base_url, CHESS)
    settings = load_settings(config)
    seat = JournalSeat.take(settings.journal.path)
    try:
        session = Session(settings, Secret(TOKEN), seat.journal)
        first = await session.reconcile(
            load_spec(config.parent / "spec.yaml"), RunOptions(trigger="test")
        )
        assert first.outcome is RunOutcome.APPLIED
        spec = CHESS.replace("Chess Club", "Chess & Go") + "  film:\n    name: Film\n"
        (tmp_path / "spec.yaml").write_text(spec)

        def replace_on_create(change: Change, status: ChangeStatus) -> None:
            if change.key == "film":
                replace_folder(state)

        report = await session.reconcile(
            load_spec(tmp_path / "spec.yaml"),
            RunOptions(trigger="test", on_progress=replace_on_create),
        )
    finally:
        seat.release()
    assert report.outcome is RunOutcome.ERROR
    assert report.failure is Failure.JOURNAL
    assert "was deleted or replaced" in (report.error or "")
    names = {g["name"] for g in emulator.state.groups()}
    assert names == {"Chess Club", "Film"}  # the create went out, the rename did not
    assert emulator.count(method="PUT") == 0


def make_daemon(config: Path, seat: JournalSeat) -> Daemon:
    settings = load_settings(config)
    loaded = Loaded(settings, load_spec(settings.spec.path), Secret(TOKEN))
    return Daemon(config, loaded, seat, notifier=Notifier({}))


@pytest.fixture
def seat(state: Path) -> Iterator[JournalSeat]:
    seat = JournalSeat.take(state / "journal.db")
    yield seat
    seat.release()


async def test_a_daemon_takes_the_new_journal_when_nobody_else_holds_it(
    tmp_path: Path,
    state: Path,
    seat: JournalSeat,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = make_daemon(write_config(tmp_path, emulator.base_url, CHESS), seat)
    assert (await tick(daemon)).outcome == "applied"  # type: ignore[union-attr]
    replace_folder(state)
    caplog.set_level(logging.INFO)
    report = await tick(daemon)
    crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert crit and "was deleted or replaced" in crit[0].message
    assert "took the lock of the new journal" in caplog.text
    # It writes to the new file from now on: the group, found by name, is managed there.
    assert report is not None and report.outcome == "applied"
    assert seat.state is SeatState.HOLDING
    with Journal.open(state / "journal.db") as new:
        assert set(new.managed()) == {"chess"}
    assert [g["name"] for g in emulator.state.groups()] == ["Chess Club"]
    assert daemon.metrics.health()[0]


async def test_a_daemon_locked_out_of_the_new_journal_never_runs_again(
    tmp_path: Path,
    state: Path,
    seat: JournalSeat,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config(tmp_path, emulator.base_url, CHESS)
    daemon = make_daemon(config, seat)
    assert (await tick(daemon)).outcome == "applied"  # type: ignore[union-attr]
    replace_folder(state)
    caplog.set_level(logging.INFO)
    (tmp_path / "spec.yaml").write_text(CHESS + "  film:\n    name: Film\n")
    daemon.loaded = Loaded(daemon.loaded.settings, load_spec(tmp_path / "spec.yaml"), Secret(TOKEN))
    with Journal.open(state / "journal.db") as other, other.writer_lock():  # a second writer
        assert await tick(daemon) is None
        assert await reconcile_now(daemon) is None
        assert seat.state is SeatState.LOCKED_OUT
        ok, why = daemon.metrics.health()
        assert not ok and "another process holds the new one" in why
        assert daemon.metrics.journal_writer._value.get() == 0  # type: ignore[attr-defined]
    crit = [r.message for r in caplog.records if r.levelno == logging.CRITICAL]
    assert any("was deleted or replaced" in m for m in crit)
    assert any("stays a non-writer until it is restarted" in m for m in crit)
    assert len([r for r in caplog.records if r.message.startswith("no run:")]) == 1
    # The other writer is gone, but this daemon does not come back: only a restart decides.
    assert await tick(daemon) is None
    assert {g["name"] for g in emulator.state.groups()} == {"Chess Club"}
    assert not daemon.metrics.health()[0]
