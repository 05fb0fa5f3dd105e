"""Adoptions that send nothing (the group already looks right), journaled in batches.

The real client against the emulator over HTTP, real SQLite journal files.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from groupsync import apply
from groupsync.apply import ApplyControl, ApplyResult, apply_plan
from groupsync.emulator import Emulator
from groupsync.journal import Journal
from groupsync.models import UNSET
from groupsync.outcomes import ChangeStatus, RunOutcome
from groupsync.plan import Action, AppliedState, Change, Plan
from groupsync.spec import DesiredGroup
from groupsync.stopping import RunStop
from test_apply import client_for, ids, make_plan, rows

pytestmark = pytest.mark.anyio

CHANGE_COLUMNS = (
    "key, group_id, name, action, cause, diff, members_added, members_removed, members_cause,"
    " set_archived, status, attempts, http_status, error, note"
)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "groupsync.db") as j:
        yield j


@pytest.fixture
def batches_of_10(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply, "ADOPT_BATCH", 10)


def account(emu: Emulator, n: int) -> dict[str, DesiredGroup]:
    """`n` groups that already look as the spec wants: odd ones pinned by `id:` with their
    members managed, even ones adopted by name; a description on every third."""
    emu.state.add_contact("ada")
    desired = {}
    for i in range(n):
        description = "d" if i % 3 == 0 else None
        group = emu.state.add_group(
            f"Group {i}", members=["ada"] if i % 2 else [], description=description
        )
        desired[f"g{i:04}"] = DesiredGroup(
            f"g{i:04}",
            f"Group {i}",
            description=description or UNSET,
            members=frozenset({"ada"}) if i % 2 else None,
            id=group["id"] if i % 2 else None,
        )
    return desired


def unsent(plan: Plan) -> list[Change]:
    return [c for c in plan.changes if c.action is Action.ADOPT and not c.writes]


class Heard:
    """What an apply told its hooks, in order."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.settled: list[tuple[str, ChangeStatus]] = []

    def control(self, stop: RunStop | None = None) -> ApplyControl:
        return ApplyControl(
            stop or RunStop(),
            on_start=lambda c: self.started.append(c.key),
            on_progress=lambda c, status: self.settled.append((c.key, status)),
        )


async def run_apply(
    emu: Emulator,
    journal: Journal,
    plan: Plan,
    desired: Mapping[str, DesiredGroup],
    control: ApplyControl,
) -> tuple[ApplyResult, int]:
    """Apply `plan` as one run; the result and how many write transactions it took."""
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)
    try:
        async with client_for(emu) as client:
            result = await apply_plan(
                plan, desired, client, journal, run, seen_ids=ids(emu), control=control
            )
    finally:
        journal._conn.set_trace_callback(None)
    journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={})
    return result, statements.count("BEGIN IMMEDIATE")


def table(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_batched_adoptions_are_journaled_as_one_at_a_time_and_heard_one_by_one(
    emulator: Emulator, journal: Journal, tmp_path: Path, batches_of_10: None
) -> None:
    desired = account(emulator, 25)
    emulator.state.add_group("Old", description="old")
    desired["w"] = DesiredGroup("w", "Old", description="new")  # an adoption that writes
    plan = await make_plan(emulator, journal, desired)
    quiet = unsent(plan)
    assert len(plan.changes) == 26 and [c.key for c in quiet] == sorted(desired)[:25]
    emulator.reset_counters()
    heard = Heard()
    result, transactions = await run_apply(emulator, journal, plan, desired, heard.control())

    assert (result.applied, result.failed, result.skipped, result.failures) == (26, 0, 0, [])
    assert emulator.count("PUT") == 1 and emulator.count() == 1  # only `w` is sent
    assert transactions == 3 + 3  # 25 in batches of 10; `w` pending, mapped, settled
    assert heard.started == [c.key for c in quiet] + ["w"]
    assert heard.settled == [(k, ChangeStatus.APPLIED) for k in heard.started]

    # What one change at a time journaled for each of them: pending, mapped, settled.
    reference = tmp_path / "one-at-a-time.db"
    with Journal.open(reference) as one:
        run = one.start_run(trigger="test", mode="apply", spec_digest="d")
        for change in quiet:
            d = desired[change.key]
            description = None if d.description is UNSET else d.description
            state = AppliedState(d.name, description, None, d.members, False)
            assert change.group_id is not None
            change_id = one.begin_change(run, change)
            one.set_managed(change.key, change.group_id, state)
            one.settle_change(change_id, status=ChangeStatus.APPLIED, group_id=change.group_id)
    changes = f"SELECT {CHANGE_COLUMNS} FROM changes WHERE key != 'w' ORDER BY id"
    groups = "SELECT key, group_id, name, applied FROM groups WHERE key != 'w' ORDER BY key"
    assert table(journal.path, changes) == table(reference, changes)
    assert table(journal.path, groups) == table(reference, groups)
    notes = {r.key: r.note for r in rows(journal)}
    assert notes["g0000"] == "adopted by name" and notes["g0001"] == "pinned by `id:`"
    assert (await make_plan(emulator, journal, desired)).empty


async def test_an_adoption_of_a_group_another_key_holds_fails_alone_in_its_batch(
    emulator: Emulator, journal: Journal, batches_of_10: None
) -> None:
    desired = account(emulator, 25)
    plan = await make_plan(emulator, journal, desired)
    [taken] = [c for c in unsent(plan) if c.key == "g0012"]  # the middle of the second batch
    assert taken.group_id is not None
    # The mapping appears after the plan read the journal: apply is where it is refused.
    journal.set_managed("intruder", taken.group_id, AppliedState("X", None, None, None, False))
    emulator.reset_counters()
    heard = Heard()
    result, transactions = await run_apply(emulator, journal, plan, desired, heard.control())

    error = (
        f"group {taken.group_id} is already managed under key 'intruder'; not also under 'g0012'"
    )
    assert (result.applied, result.failed, result.failures) == (24, 1, [("g0012", error)])
    assert transactions == 3 and emulator.count() == 0
    assert ("g0012", ChangeStatus.FAILED) in heard.settled and len(heard.settled) == 25
    assert len(heard.started) == 25
    by_key = {r.key: r for r in rows(journal)}
    assert (by_key["g0012"].status, by_key["g0012"].error) == ("failed", error)
    assert all(r.status == "applied" for k, r in by_key.items() if k != "g0012")
    managed = journal.managed()
    assert set(managed) == set(desired) - {"g0012"} | {"intruder"}
    assert managed["intruder"].group_id == taken.group_id


async def test_a_stop_between_batches_skips_the_adoptions_left(
    emulator: Emulator, journal: Journal, batches_of_10: None
) -> None:
    desired = account(emulator, 25)
    plan = await make_plan(emulator, journal, desired)
    quiet = [c.key for c in unsent(plan)]
    stop = RunStop()
    # As a signal handler does: on the loop, at its first chance, here after the first batch.
    asyncio.get_running_loop().call_soon(lambda: stop.request("SIGTERM", grace_s=60))
    heard = Heard()
    result, transactions = await run_apply(emulator, journal, plan, desired, heard.control(stop))

    assert (result.applied, result.failed, result.skipped, result.unknown) == (10, 0, 15, 0)
    assert transactions == 3  # one batch applied, two skipped
    assert heard.started == quiet[:10]
    assert heard.settled == [(k, ChangeStatus.APPLIED) for k in quiet[:10]] + [
        (k, ChangeStatus.SKIPPED) for k in quiet[10:]
    ]
    skipped = [r for r in rows(journal) if r.status == "skipped"]
    assert [r.key for r in skipped] == quiet[10:]
    assert all(r.note.endswith("not started: SIGTERM") and r.attempts == 0 for r in skipped)
    assert set(journal.managed()) == set(quiet[:10])
    assert journal.pending_changes() == []


async def test_adoptions_take_one_write_transaction_per_batch(
    emulator: Emulator, journal: Journal
) -> None:
    n = 2 * apply.ADOPT_BATCH + 50
    desired = account(emulator, n)
    plan = await make_plan(emulator, journal, desired)
    assert len(unsent(plan)) == n
    result, transactions = await run_apply(emulator, journal, plan, desired, ApplyControl())
    assert (result.applied, result.failed) == (n, 0)
    assert transactions == 3  # one at a time: 3 per adoption, 6,150
    assert len(journal.managed()) == n
