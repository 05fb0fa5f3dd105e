"""An apply process killed with SIGKILL at random points, then run again: no duplicate group, no
lost change, no `pending` row left unexplained.

The apply processes are forked from the test (a fresh interpreter per trial would spend most of
the test importing groupsync). Forking next to the emulator's thread is safe here: the child
touches nothing that thread holds (the emulator keeps its state in memory, the child opens its
own journal, loop and sockets) and multiprocessing ends it with os._exit, if not SIGKILL first.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import pytest

from groupsync.api import Client
from groupsync.apply import apply_plan, recover_pending
from groupsync.emulator import Emulator
from groupsync.journal import Journal
from groupsync.plan import compute_plan
from groupsync.spec import DesiredGroup
from helpers import api_client

TOKEN = "test-token"
TRIALS = 20
BATCH = 5
GROUPS = 8


def desired_for(prefix: str) -> dict[str, DesiredGroup]:
    return {
        f"g{i}": DesiredGroup(
            f"g{i}", f"{prefix} {i}", members=frozenset({"ada"}), archived=i % 3 == 0
        )
        for i in range(GROUPS)
    }


def client_for(base_url: str) -> Client:
    # verify=False: plain HTTP on 127.0.0.1, and it spares loading CA certificates per process.
    transport = httpx.AsyncHTTPTransport(verify=False)
    return api_client(base_url, TOKEN, max_requests_per_s=1000, transport=transport)


def _apply_in_child(base_url: str, path: Path, prefix: str, ready: Connection) -> None:
    """The apply process the test kills: plans and applies as `groupsync apply` does."""

    async def main() -> None:
        desired = desired_for(prefix)
        with Journal.open(path) as journal, journal.writer_lock():
            async with client_for(base_url) as client:
                groups = await client.list_all_groups()
                plan = compute_plan(desired, groups, journal.managed())
                run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
                ready.send("applying")
                seen = {g.id for g in groups}
                await apply_plan(plan, desired, client, journal, run, seen_ids=seen, workers=2)

    asyncio.run(main())


async def converge(base_url: str, path: Path, desired: dict[str, DesiredGroup]) -> int:
    """What the next run does after a crash: recover, then plan and apply until nothing is left.

    Returns how many pending rows the crash had left."""
    with Journal.open(path) as journal:
        async with client_for(base_url) as client:
            left = len(journal.pending_changes())
            notes = await recover_pending(client, journal)
            assert len(notes) == left and journal.pending_changes() == []
            for _ in range(3):
                groups = await client.list_all_groups()
                plan = compute_plan(desired, groups, journal.managed())
                if plan.empty:
                    return left
                run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
                seen = {g.id for g in groups}
                result = await apply_plan(plan, desired, client, journal, run, seen_ids=seen)
                assert result.failed == 0, result.failures
    raise AssertionError("no convergence after 3 runs")


def check(emulator: Emulator, path: Path, prefix: str) -> None:
    """Every desired group exactly once, as desired; every row settled, interruptions explained."""
    desired = desired_for(prefix)
    with Journal.open(path) as journal:
        rows = [c for run in journal.history(limit=100) for c in run.changes]
        managed = journal.managed()
    assert all(r.status in ("applied", "interrupted") for r in rows)
    assert all(r.note for r in rows if r.status == "interrupted")
    mine = [g for g in emulator.state.groups() if g["name"].startswith(f"{prefix} ")]
    assert Counter(g["name"] for g in mine) == Counter(d.name for d in desired.values())
    by_id = {g["id"]: g for g in mine}
    for key, d in desired.items():
        group = by_id[managed[key].group_id]
        assert (group["archived_at"] is not None) == d.archived
        assert {c["username"] for c in group["contacts"]} == {"ada"}


@pytest.mark.slow  # 20 forked apply processes
@pytest.mark.anyio
async def test_killed_applies_recover_and_converge(emulator: Emulator, tmp_path: Path) -> None:
    emulator.state.add_contact("ada")
    emulator.faults.latency_s = 0.03  # long enough for kills to land mid-apply
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(20261127)
    killed_mid_change = 0
    for batch in range(0, TRIALS, BATCH):  # trials in a batch run side by side, on their own groups
        trials = [(f"T{n}", tmp_path / f"trial{n}.db") for n in range(batch, batch + BATCH)]
        children = []
        for prefix, path in trials:
            ours, theirs = ctx.Pipe()
            child = ctx.Process(
                target=_apply_in_child, args=(emulator.base_url, path, prefix, theirs)
            )
            child.start()
            children.append((child, ours))
        try:
            for child, ours in children:
                assert ours.poll(60) and ours.recv() == "applying"
                time.sleep(rng.uniform(0, 0.1))  # noqa: ASYNC251 - the children work meanwhile
                child.kill()  # SIGKILL: no cleanup, no flush
        finally:
            for child, _ in children:
                child.kill()
                child.join(30)
        assert all(child.exitcode in (0, -9) for child, _ in children)  # finished, or killed
        left = await asyncio.gather(
            *(converge(emulator.base_url, path, desired_for(prefix)) for prefix, path in trials)
        )
        killed_mid_change += sum(1 for n in left if n)
        for prefix, path in trials:
            check(emulator, path, prefix)
    assert killed_mid_change > 0  # the kills did land inside changes, not only between them
