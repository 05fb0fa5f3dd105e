"""A plan from a state snapshot is the daemon's plan with its journal: same changes, same checksum.

The story runs against the emulator over HTTP with a real journal file, through creates,
display-name and key renames, removals, restores and drift made outside groupsync. At every
step the plan from the journal and the plan from a snapshot of it (through its bytes) must be
equal, and a plan with no state must not be, so the test shows the snapshot is what matters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from groupsync.config import Settings, load_settings
from groupsync.emulator import Emulator
from groupsync.journal import Journal
from groupsync.outcomes import RunOutcome
from groupsync.plan import Action, Cause
from groupsync.reconcile import Planned, RunOptions, Session
from groupsync.secret import Secret
from groupsync.spec import load_spec
from groupsync.state import NO_STATE, dumps, load_snapshot, snapshot

pytestmark = pytest.mark.anyio
TOKEN = Secret("test-token")


def _settings(tmp_path: Path, emu: Emulator) -> Settings:
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api": {"base_url": emu.base_url, "max_requests_per_s": 100},
                "spec": {"path": "spec.yaml"},
                "journal": {"path": "journal.db"},
                "safety": {"max_archive_fraction": 1.0},
            }
        ),
        encoding="utf-8",
    )
    return load_settings(config)


def _write_spec(settings: Settings, groups: dict[str, Any]) -> None:
    settings.spec.path.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")


async def _plans_agree(settings: Settings, journal: Journal, *, managed: bool = True) -> Planned:
    """The journal's plan, after checking the snapshot's and no state's against it."""
    spec = load_spec(settings.spec.path)
    mine = await Session(settings, TOKEN, journal).plan(spec)
    from_snapshot = load_snapshot(dumps(snapshot(journal)), "snapshot.json")
    theirs = await Session(settings, TOKEN, state=from_snapshot).plan(spec)
    assert theirs.plan.changes == mine.plan.changes
    assert theirs.plan.errors == mine.plan.errors
    assert theirs.plan.refusals == mine.plan.refusals
    assert theirs.plan.checksum == mine.plan.checksum
    assert theirs.plan.managed_count == mine.plan.managed_count
    assert theirs.state.line.source == "snapshot" and mine.state.line.source == "journal"
    assert (theirs.state.run_id, theirs.state.managed_count) == (
        mine.state.run_id,
        mine.state.managed_count,
    )
    if managed:  # without state, the plan is another one
        blind = await Session(settings, TOKEN, state=NO_STATE).plan(spec)
        assert blind.plan.checksum != mine.plan.checksum
    return mine


async def _apply(settings: Settings, journal: Journal) -> None:
    spec = load_spec(settings.spec.path)
    report = await Session(settings, TOKEN, journal).reconcile(spec, RunOptions(force=True))
    assert report.outcome in (RunOutcome.APPLIED, RunOutcome.NOOP), report.error


def _actions(planned: Planned) -> dict[str, tuple[Action, Cause]]:
    return {c.key: (c.action, c.cause) for c in planned.plan.changes}


async def test_snapshot_plans_match_the_journal_through_the_whole_story(
    emulator: Emulator, tmp_path: Path
) -> None:
    for name in ("ada", "bo", "cy", "di"):
        emulator.state.add_contact(name)
    settings = _settings(tmp_path, emulator)
    v1 = {
        "chess": {"name": "Chess Club", "members": ["ada", "bo"]},
        "hiking": {"name": "Hiking", "description": "Saturdays"},
        "film": {"name": "Film", "members": ["cy"]},
        "band": {"name": "Band"},
    }
    _write_spec(settings, v1)
    with Journal.open(settings.journal.path) as journal:
        assert _actions(await _plans_agree(settings, journal, managed=False)) == {
            k: (Action.CREATE, Cause.SPEC) for k in v1
        }
        await _apply(settings, journal)
        ids = {k: mg.group_id for k, mg in journal.managed().items()}

        # A display-name rename, a removal, a new key, a member change, and drift on band.
        emulator.state.update_group(ids["band"], {"description": "edited by hand"})
        v2 = {
            "chess": {"name": "Chess & Go Club", "members": ["ada", "bo"]},
            "film": {"name": "Film", "members": ["cy", "di"]},
            "band": {"name": "Band"},
            "choir": {"name": "Choir"},
        }
        _write_spec(settings, v2)
        assert _actions(await _plans_agree(settings, journal)) == {
            "chess": (Action.UPDATE, Cause.SPEC),
            "film": (Action.UPDATE, Cause.SPEC),
            "hiking": (Action.ARCHIVE, Cause.SPEC),
            "choir": (Action.CREATE, Cause.SPEC),
        }
        await _apply(settings, journal)

        # The removed key comes back (restore), a key is renamed by pinning its group, a
        # managed group is deleted by hand, and a member is removed by hand (drift).
        emulator.state.delete_group(ids["band"])
        emulator.state.update_group(ids["chess"], {"contacts": [{"username": "ada"}]})
        v3 = {
            "chess": {"name": "Chess & Go Club", "members": ["ada", "bo"]},
            "cinema": {"name": "Film", "members": ["cy", "di"], "id": ids["film"]},
            "band": {"name": "Band"},
            "choir": {"name": "Choir"},
            "hiking": {"name": "Hiking", "description": "Saturdays"},
        }
        _write_spec(settings, v3)
        planned = await _plans_agree(settings, journal)
        actions = _actions(planned)
        assert actions["hiking"] == (Action.RESTORE, Cause.SPEC)
        assert actions["band"] == (Action.CREATE, Cause.DRIFT)
        assert actions["chess"] == (Action.UPDATE, Cause.DRIFT)
        assert actions["film"][0] is Action.FORGET and actions["cinema"][0] is Action.ADOPT
        await _apply(settings, journal)
        await _plans_agree(settings, journal)  # nothing left to do, from either state
        assert (
            await Session(settings, TOKEN, journal).plan(load_spec(settings.spec.path))
        ).plan.empty
