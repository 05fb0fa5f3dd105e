"""One reconcile against the emulator over HTTP, with a real journal file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from groupsync.api import Client
from groupsync.config import Settings, load_settings
from groupsync.emulator import Emulator
from groupsync.journal import Journal
from groupsync.outcomes import Failure, RunOutcome
from groupsync.plan import Action, AppliedState
from groupsync.reconcile import RunOptions, Session
from groupsync.secret import Secret
from groupsync.spec import load_spec

pytestmark = pytest.mark.anyio
TOKEN = Secret("test-token")


def settings_for(tmp_path: Path, emu: Emulator, groups: dict[str, object]) -> Settings:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api": {"base_url": emu.base_url, "max_requests_per_s": 100},
                "spec": {"path": "spec.yaml"},
                "journal": {"path": "journal.db"},
            }
        ),
        encoding="utf-8",
    )
    return load_settings(config)


def manage(journal: Journal, key: str, group: dict[str, object]) -> None:
    state = AppliedState(str(group["name"]), None, None, None, archived=False)
    journal.set_managed(key, str(group["id"]), state)


async def test_a_group_deleted_by_hand_is_recreated_after_one_check(
    emulator: Emulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, emulator, {"club": {"name": "Club"}})
    gone = emulator.state.add_group("Club")
    emulator.state.delete_group(str(gone["id"]))
    with Journal.open(settings.journal.path) as journal:
        manage(journal, "club", gone)
        planned = await Session(settings, TOKEN, journal).plan(load_spec(settings.spec.path))
    [change] = planned.plan.changes
    assert change.action == Action.CREATE
    assert "deleted out of band" in change.note
    assert emulator.count(method="GET", path="/v1/groups/{id}") == 1


async def test_a_group_missed_by_both_lists_is_not_recreated(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, emulator, {"club": {"name": "Club"}})
    club = emulator.state.add_group("Club")
    real_list = Client.list_all_groups

    async def list_missing_club(self: Client) -> list:  # archived/restored between the reads
        return [g for g in await real_list(self) if g.id != club["id"]]

    monkeypatch.setattr(Client, "list_all_groups", list_missing_club)
    with Journal.open(settings.journal.path) as journal:
        manage(journal, "club", club)
        planned = await Session(settings, TOKEN, journal).plan(load_spec(settings.spec.path))
    assert planned.plan.changes == ()
    assert emulator.count(method="POST") == 0


async def test_a_refused_token_is_an_error_outcome_not_a_crash(
    emulator: Emulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, emulator, {"club": {"name": "Club"}})
    with Journal.open(settings.journal.path) as journal:
        session = Session(settings, Secret("wrong-token"), journal)
        report = await session.reconcile(load_spec(settings.spec.path))
        [run] = journal.history(limit=1)
    assert report.outcome is RunOutcome.ERROR and report.exit_code == 1
    assert report.failure is Failure.AUTH  # what the daemon acts on, not the message's words
    assert "refused the token" in (report.error or "")
    assert run.outcome == "error" and run.finished_at
    assert "wrong-token" not in (report.error or "")


async def test_apply_then_noop_then_refused(emulator: Emulator, tmp_path: Path) -> None:
    groups = {f"g{i}": {"name": f"G{i}"} for i in range(4)}
    settings = settings_for(tmp_path, emulator, groups)
    with Journal.open(settings.journal.path) as journal:
        session = Session(settings, TOKEN, journal)
        first = await session.reconcile(load_spec(settings.spec.path))
        assert (first.outcome, first.counts["create"]) == ("applied", 4)
        again = await session.reconcile(
            load_spec(settings.spec.path), RunOptions(trigger="schedule")
        )
        assert again.outcome == "noop"

        settings_for(tmp_path, emulator, {"g0": {"name": "G0"}})  # 3 of 4 would be archived
        refused = await session.reconcile(
            load_spec(settings.spec.path), RunOptions(trigger="schedule")
        )
    assert refused.outcome == "refused" and refused.exit_code == 3
    assert "would archive 3 of 4" in (refused.error or "")
    assert len(emulator.state.groups(archived=False)) == 4


async def test_a_runs_request_counts_match_what_the_api_saw(
    emulator: Emulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, emulator, {"a": {"name": "A"}, "b": {"name": "B"}})
    emulator.state.add_group("A")  # adopted by name
    with Journal.open(settings.journal.path) as journal:
        report = await Session(settings, TOKEN, journal).reconcile(load_spec(settings.spec.path))
    seen: dict[tuple[str, str], int] = {}
    for (method, _path, status), n in emulator.counters.items():
        seen[method, str(status)] = seen.get((method, str(status)), 0) + n
    assert dict(report.api.by_method_status) == seen == {("GET", "200"): 2, ("POST", "201"): 1}
