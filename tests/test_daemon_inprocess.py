"""The daemon's run loop in-process against the emulator: backoff, git pull, flat memory."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from daemon_support import reconcile_now, tick
from groupsync import loader
from groupsync.config import load_settings
from groupsync.daemon import Daemon, run
from groupsync.emulator import Emulator
from groupsync.loader import Loaded
from groupsync.outcomes import ChangeStatus, Failure, RunOutcome
from groupsync.plan import Change
from groupsync.reconcile import RunReport
from groupsync.reloader import Reloader
from groupsync.sdnotify import Notifier
from groupsync.secret import Secret
from groupsync.spec import Spec, load_spec
from groupsync.writer import JournalSeat
from helpers import git

pytestmark = pytest.mark.anyio

SPEC = """\
groups:
  chess:
    name: Chess Club
    members: [ada, bob]
  go:
    name: Go Club
"""


def write_config(tmp_path: Path, base_url: str, spec_path: Path, *, git_pull: bool = False) -> Path:
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        f"api:\n  base_url: {base_url}\n  max_requests_per_s: 1000\n"
        f"spec:\n  path: {spec_path}\n  git_pull: {str(git_pull).lower()}\n"
        "schedule:\n  every: 5m\n  jitter: 0s\njournal:\n  path: journal.db\n"
    )
    return config


@pytest.fixture
def contacts(emulator: Emulator) -> Emulator:
    for name in ("ada", "bob", "carol"):
        emulator.state.add_contact(name)
    return emulator


@pytest.fixture
def seat(tmp_path: Path) -> Iterator[JournalSeat]:
    """The journal the daemon holds, open and locked as `groupsync run` holds it."""
    seat = JournalSeat.take(tmp_path / "journal.db")
    yield seat
    seat.release()


def make_daemon(config: Path, seat: JournalSeat, token: str = "test-token") -> Daemon:
    settings = load_settings(config)
    loaded = Loaded(settings, load_spec(settings.spec.path), Secret(token))
    return Daemon(config, loaded, seat, notifier=Notifier({}))


async def test_outages_back_off_and_a_success_resets(
    tmp_path: Path, contacts: Emulator, seat: JournalSeat
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    daemon = make_daemon(write_config(tmp_path, contacts.base_url, spec), seat, "wrong")
    outcomes = []
    for _ in range(12):
        report = await tick(daemon)
        outcomes.append(report.outcome if report else "skipped")
    # Failures 1, 2, 3, 4 leave gaps of 1, 2, 3, 3 ticks: 5-minute ticks, capped at 15 minutes.
    assert outcomes == [
        "error",
        "error",
        "skipped",
        "error",
        "skipped",
        "skipped",
        "error",
        "skipped",
        "skipped",
        "error",
        "skipped",
        "skipped",
    ]
    assert daemon.metrics.consecutive_errors._value.get() == 5

    # The operator fixes the token; the next tick that is allowed to run succeeds and resets.
    daemon.loaded = Loaded(daemon.loaded.settings, daemon.loaded.spec, Secret("test-token"))
    report = await tick(daemon)
    assert report is not None and report.outcome == "applied"
    assert (await tick(daemon)).outcome == "noop"  # type: ignore[union-attr]
    assert daemon.metrics.consecutive_errors._value.get() == 0


async def test_memory_stays_flat_over_many_runs(
    tmp_path: Path, contacts: Emulator, seat: JournalSeat
) -> None:
    """Counts live objects (cheap, unlike tracemalloc): a run that leaves anything behind
    (a report, a plan, a client, a task) shows up as growth proportional to the runs."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    daemon = make_daemon(write_config(tmp_path, contacts.base_url, spec), seat)
    chess_id = ""

    async def runs(count: int) -> int:
        for i in range(count):
            if i % 2:  # half the runs apply something, half are no-ops
                contacts.state.update_group(chess_id, {"name": f"drift {i}"})
            report = await reconcile_now(daemon)
            assert report is not None and report.outcome in ("applied", "noop")
        gc.collect()
        return len(gc.get_objects())

    await runs(1)
    chess_id = next(g["id"] for g in contacts.state.groups() if g["name"] == "Chess Club")
    await runs(3)  # warm caches up
    start = await runs(1)
    middle = await runs(10)
    end = await runs(10)
    # Noise is about ±200 objects; leaking one report per run would add thousands.
    assert max(middle, end) - start < 500, (start, middle, end)


ROSTER_SPEC = """\
rosters:
  clubs: {csv: clubs.csv}
groups:
  chess:
    name: Chess Club
    members: ['@clubs:chess']
  go:
    name: Go Club
"""


def finished_runs(journal: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM runs WHERE finished_at").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def test_after_a_reload_the_daemon_holds_one_spec(
    tmp_path: Path, contacts: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`groupsync run` as the CLI starts it (`daemon.run`, in this process), a SIGHUP after its
    startup run, a changed spec. Once the reload's run is over, one Spec is alive, the new one:
    a reference kept by the startup, or a run's spec with its rosters read again kept beside
    the loaded one, is a second spec (tens of MiB at 100,000 groups)."""
    monkeypatch.setenv("ECAMPUS_TOKEN", "test-token")
    (tmp_path / "clubs.csv").write_text("group,username\nchess,ada\nchess,bob\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(ROSTER_SPEC)
    config = write_config(tmp_path, contacts.base_url, spec)
    journal = tmp_path / "journal.db"
    returned = threading.Event()
    live: list[str] = []

    def until(runs: int) -> bool:
        for _ in range(1000):  # bounded: 20 s, for runs of a few milliseconds
            if finished_runs(journal) >= runs or returned.is_set():
                break
            time.sleep(0.02)
        return finished_runs(journal) >= runs and not returned.is_set()

    def drive() -> None:
        if until(1):
            spec.write_text(ROSTER_SPEC.replace("Go Club", "Go & Baduk"))
            os.kill(os.getpid(), signal.SIGHUP)
            if until(2):
                gc.collect()
                live.extend(o.digest for o in gc.get_objects() if type(o) is Spec)
        if not returned.is_set():  # the daemon's handler stops it; unhandled, it ends pytest
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        assert run(config) == 0  # groupsync run --config CONFIG
    finally:
        returned.set()
        driver.join(30)
        logging.getLogger().handlers[:] = [
            h for h in logging.getLogger().handlers if not getattr(h, "_groupsync", False)
        ]
    assert finished_runs(journal) == 2
    assert live == [load_spec(spec).digest]


async def test_between_runs_the_daemon_keeps_the_outcome_not_the_plan(
    tmp_path: Path, contacts: Emulator, seat: JournalSeat
) -> None:
    """After an adoption the plan and what was applied are 100,000 changes and groups."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    daemon = make_daemon(write_config(tmp_path, contacts.base_url, spec), seat)
    report = await reconcile_now(daemon)
    assert report is not None and report.outcome == "applied"
    assert report is daemon._last and report.plan is None and report.result is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_pull_before_each_run_keeps_the_last_good_spec(
    tmp_path: Path, contacts: Emulator, seat: JournalSeat, caplog: pytest.LogCaptureFixture
) -> None:
    origin, work, clone = tmp_path / "origin.git", tmp_path / "work", tmp_path / "clone"
    git(tmp_path, "init", "--bare", "-b", "main", str(origin))
    git(tmp_path, "init", "-b", "main", str(work))
    (work / "groups.yaml").write_text(SPEC)
    git(work, "add", ".")
    git(work, "commit", "-m", "first")
    git(work, "push", str(origin), "main")
    git(tmp_path, "clone", str(origin), str(clone))
    config = write_config(tmp_path, contacts.base_url, clone / "groups.yaml", git_pull=True)
    daemon = make_daemon(config, seat)
    assert (await reconcile_now(daemon)).outcome == "applied"  # type: ignore[union-attr]

    # A merged change is pulled and applied by the next run, which records its commit.
    (work / "groups.yaml").write_text(SPEC.replace("Go Club", "Go & Baduk"))
    git(work, "commit", "-am", "rename")
    git(work, "push", str(origin), "main")
    assert (await reconcile_now(daemon)).outcome == "applied"  # type: ignore[union-attr]
    assert "Go & Baduk" in {g["name"] for g in contacts.state.groups()}
    with closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        commit, dirty = db.execute(
            "SELECT spec_commit, spec_dirty FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert commit == git(work, "rev-parse", "HEAD")
    assert not dirty
    good = commit

    # A broken commit: the previous spec stays, and every run says why, at file:line.
    (work / "groups.yaml").write_text(SPEC.replace("    name: Go Club", "    nme: Go Club"))
    git(work, "commit", "-am", "typo")
    git(work, "push", str(origin), "main")
    caplog.set_level(logging.INFO)
    for _ in range(2):
        assert (await reconcile_now(daemon)).outcome == "noop"  # type: ignore[union-attr]
    invalid = [r for r in caplog.records if "is invalid, keeping the last good one" in r.message]
    assert len(invalid) >= 2
    assert "groups.yaml:" in invalid[0].message
    with closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        [recorded] = db.execute("SELECT spec_commit FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert recorded == good  # the commit whose spec ran, not the broken one on disk

    # An unreachable remote: the pull fails, the checkout and spec stay, the run goes on.
    git(clone, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    caplog.clear()
    assert (await reconcile_now(daemon)).outcome == "noop"  # type: ignore[union-attr]
    assert any("keeping the last good checkout" in r.message for r in caplog.records)


def test_load_refuses_a_bad_spec_with_file_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("groups:\n  chess:\n    nme: Chess\n")
    config = write_config(tmp_path, "http://127.0.0.1:9/v1", spec)
    with pytest.raises(Exception, match=r"spec\.yaml:3"):
        loader.load(config)


async def test_reload_requests_during_a_load_fold_into_one_more() -> None:
    release = threading.Event()
    loaded: list[int] = []

    def load() -> int:
        assert release.wait(10)
        return len(loaded)

    reloader: Reloader[int] = Reloader(load, loaded.append, pytest.fail, min_gap_s=0.05)
    reloader.request()
    for _ in range(100):  # until the first load is under way
        if reloader.loads:
            break
        await asyncio.sleep(0.01)
    for _ in range(49):
        reloader.request()
    release.set()
    for _ in range(200):  # bounded: 2 loads and a 0.05 s gap take well under a second
        if len(loaded) == 2 and reloader.loads == 2:
            break
        await asyncio.sleep(0.01)
    assert loaded == [0, 1]
    assert reloader.loads == 2
    await reloader.close()


async def test_a_run_ended_by_its_deadline_backs_off_like_an_error(
    tmp_path: Path, contacts: Emulator, seat: JournalSeat, caplog: pytest.LogCaptureFixture
) -> None:
    """reconcile ends a run past its deadline as `interrupted`: a slow API, so back off."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    daemon = make_daemon(write_config(tmp_path, contacts.base_url, spec), seat)
    caplog.set_level(logging.INFO)
    report = RunReport(run_id=None, outcome=RunOutcome.INTERRUPTED, error="past its deadline")
    daemon._after_run(report)
    daemon._after_run(report)
    assert daemon.backoff.failures == 2
    assert daemon.backoff.to_skip == 1
    assert not daemon.metrics.health()[0]
    assert "2 failed runs in a row; next attempt after skipping 1" in caplog.text
    assert (await tick(daemon)) is None  # skipped by the backoff
    assert (await tick(daemon)).outcome == "applied"  # type: ignore[union-attr]
    assert daemon.backoff.failures == 0


@pytest.mark.parametrize("when", ["start", "end"])
async def test_a_journal_that_cannot_record_the_run_is_one_error_line_not_a_crash(
    tmp_path: Path,
    contacts: Emulator,
    seat: JournalSeat,
    caplog: pytest.LogCaptureFixture,
    when: str,
) -> None:
    """The journal refuses writes (SQLite's own read-only error, as on a full or read-only disk)
    before the run starts, or once its one change has settled: one line saying what to do."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("groups:\n  chess:\n    name: Chess Club\n")
    daemon = make_daemon(write_config(tmp_path, contacts.base_url, spec), seat)
    conn = daemon.journal._conn

    settled = daemon._on_change

    def refuse_writes_once_settled(change: Change, status: ChangeStatus) -> None:
        settled(change, status)
        conn.execute("PRAGMA query_only = ON")

    if when == "start":
        conn.execute("PRAGMA query_only = ON")
    else:
        daemon._on_change = refuse_writes_once_settled  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    try:
        report = await reconcile_now(daemon)
    finally:
        conn.execute("PRAGMA query_only = OFF")
    assert report is not None
    assert report.outcome is RunOutcome.ERROR and report.failure is Failure.JOURNAL
    doing = (
        "cannot start a run (nothing was applied)" if when == "start" else "could not be recorded"
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["groupsync.daemon"]
    [line] = errors
    assert line.getMessage().startswith(f"journal {seat.path}: ") and doing in line.getMessage()
    assert "make the file and its folder writable" in line.getMessage()
    assert line.exc_info is None and line.failure == "journal"  # type: ignore[attr-defined]
    assert "run crashed" not in caplog.text
    assert daemon.backoff.failures == 1
