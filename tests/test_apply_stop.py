"""A run asked to stop (signal or deadline): nothing new starts, nothing is left `pending`.

The real client against the emulator over HTTP, a real SQLite journal; the emulator's latency
fault keeps the changes in flight long enough to be caught there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from groupsync.api import ClientStats
from groupsync.apply import ApplyControl, ApplyResult, apply_plan
from groupsync.config import ApiSettings
from groupsync.deadline import RunDeadline
from groupsync.emulator import Emulator
from groupsync.journal import Journal
from groupsync.outcomes import RunOutcome
from groupsync.plan import Change, compute_plan
from groupsync.reconcile import Planned, RunOptions, Session
from groupsync.spec import DesiredGroup, load_spec
from groupsync.stopping import RunStop
from test_apply import client_for, ids, names, rows, spec
from test_reconcile import TOKEN, settings_for

pytestmark = pytest.mark.anyio

DESIRED = spec(*(DesiredGroup(f"g{n}", f"Group {n}") for n in range(8)))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "groupsync.db") as j:
        yield j


async def apply_stopped(
    emu: Emulator, journal: Journal, stop: RunStop, on_start: object
) -> ApplyResult:
    """Apply DESIRED's eight creates with two workers, calling on_start as each is sent."""
    plan = compute_plan(DESIRED, [], {})
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu, max_concurrency=2) as client:
        return await apply_plan(
            plan,
            DESIRED,
            client,
            journal,
            run,
            seen_ids=ids(emu),
            control=ApplyControl(stop, on_start=on_start),  # type: ignore[arg-type]
            workers=2,
        )


def statuses(journal: Journal) -> Counter[str]:
    return Counter(r.status for r in rows(journal))


def after_starts(n: int, action: object) -> object:
    """An on_start hook that calls `action()` once the n-th change has been sent."""
    started: list[Change] = []

    def on_start(change: Change) -> None:
        started.append(change)
        if len(started) == n:
            action()  # type: ignore[operator]

    return on_start


async def test_a_graceful_stop_lets_the_changes_in_flight_finish_and_starts_no_more(
    emulator: Emulator, journal: Journal
) -> None:
    emulator.faults.latency_s = 0.2
    stop = RunStop()
    result = await apply_stopped(
        emulator, journal, stop, after_starts(2, lambda: stop.request("test", grace_s=10))
    )
    assert (result.applied, result.failed, result.skipped, result.unknown) == (2, 0, 6, 0)
    assert emulator.count("POST") == 2 and len(emulator.state.groups()) == 2
    assert statuses(journal) == Counter({"applied": 2, "skipped": 6})
    skipped = [r for r in rows(journal) if r.status == "skipped"]
    assert all(r.note == "not started: test" and r.attempts == 0 for r in skipped)
    assert journal.pending_changes() == []


async def test_a_stop_at_once_abandons_the_changes_in_flight_as_unknown(
    emulator: Emulator, journal: Journal
) -> None:
    emulator.faults.latency_s = 2.0
    stop = RunStop()
    started = time.monotonic()
    result = await apply_stopped(emulator, journal, stop, after_starts(2, lambda: stop.now("now")))
    assert time.monotonic() - started < 1.5  # did not wait out the 2 s answers
    assert (result.applied, result.failed, result.skipped, result.unknown) == (0, 0, 6, 2)
    assert statuses(journal) == Counter({"skipped": 6, "unknown": 2})
    unknown = [r for r in rows(journal) if r.status == "unknown"]
    assert all("abandoned in flight (now)" in r.note for r in unknown)
    assert journal.pending_changes() == []


async def test_a_graceful_stop_whose_grace_runs_out_abandons_what_is_left(
    emulator: Emulator, journal: Journal
) -> None:
    emulator.faults.latency_s = 2.0
    stop = RunStop()
    result = await apply_stopped(
        emulator, journal, stop, after_starts(2, lambda: stop.request("SIGTERM", grace_s=0.2))
    )
    assert (result.skipped, result.unknown) == (6, 2)
    assert stop.reason == "SIGTERM; the 0.2s grace for the changes in flight ran out"
    assert journal.pending_changes() == []


async def test_an_apply_cancelled_from_outside_leaves_no_row_pending(
    emulator: Emulator, journal: Journal
) -> None:
    emulator.faults.latency_s = 2.0
    sent = asyncio.Event()
    task = asyncio.ensure_future(
        apply_stopped(emulator, journal, RunStop(), after_starts(2, sent.set))
    )
    await asyncio.wait_for(sent.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert statuses(journal) == Counter({"unknown": 2})
    assert journal.pending_changes() == []


# --- the run's deadline ------------------------------------------------------------------------


def test_the_deadline_grows_with_the_pages_read_and_the_changes_planned() -> None:
    api = ApiSettings(timeout_s=10, max_concurrency=8, max_requests_per_s=10)
    stats = ClientStats()
    deadline = RunDeadline(api, stats)
    assert deadline.budget_s() == 60  # the floor: max(60 s, 3 x timeout_s)
    stats.by_method_status["GET", "200"] += 3
    stats.by_method_status["GET", "503"] += 5  # failed reads earn nothing
    deadline.changes = 20
    assert deadline.budget_s() == 60 + 3 * 10 + 2 * 20 * (10 / 8)
    slow = RunDeadline(
        ApiSettings(timeout_s=30, max_concurrency=64, max_requests_per_s=0.5), ClientStats()
    )
    slow.changes = 1
    assert slow.budget_s() == 3 * 30 + 2 * 1 * (1 / 0.5)  # the rate limit, when it is slower


async def test_a_run_past_its_deadline_is_interrupted_and_settles_every_change(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, emulator, {f"g{n}": {"name": f"G{n}"} for n in range(8)})
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"max_concurrency": 2})}
    )

    def slow_down(planned: Planned) -> None:  # reads are quick, every write takes 2 s
        emulator.faults.latency_s = 2.0

    with Journal.open(settings.journal.path) as journal, caplog.at_level(logging.ERROR):
        started = time.monotonic()
        report = await Session(settings, TOKEN, journal).reconcile(
            load_spec(settings.spec.path),
            RunOptions(trigger="schedule", show=slow_down, deadline_s=1.0),
        )
        elapsed = time.monotonic() - started
        [run] = journal.history(limit=1)
        pending = journal.pending_changes()
    assert elapsed < 1.8  # ended at the deadline, not after the 2 s answers
    assert report.outcome is RunOutcome.INTERRUPTED and report.exit_code == 130
    assert report.error == (
        "the run deadline of 1s passed: 6 change(s) not started, 2 abandoned in flight"
    )
    assert run.outcome == "interrupted" and run.error == report.error
    assert Counter(c.status for c in run.changes) == Counter({"skipped": 6, "unknown": 2})
    assert pending == []
    assert report.counts["skipped"] == 6 and report.counts["unknown"] == 2
    assert any(
        r.levelno == logging.ERROR and "outcome=interrupted" in r.getMessage()
        for r in caplog.records
    )


async def test_a_deadline_that_passes_while_reading_writes_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, emulator, {"g": {"name": "G"}})
    emulator.faults.latency_s = 1.0
    with Journal.open(settings.journal.path) as journal:
        report = await Session(settings, TOKEN, journal).reconcile(
            load_spec(settings.spec.path), RunOptions(trigger="schedule", deadline_s=0.3)
        )
        [run] = journal.history(limit=1)
    assert report.outcome is RunOutcome.INTERRUPTED
    assert report.error == "the run deadline of 0.3s passed before anything was applied"
    assert run.changes == () and emulator.count("POST") == 0


async def test_time_at_the_prompt_counts_for_neither_the_deadline_nor_the_duration(
    emulator: Emulator, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, emulator, {"g": {"name": "G"}})

    def person_thinks(planned: Planned) -> bool:
        time.sleep(1.0)  # a person reading the plan; the event loop is blocked, as at a prompt
        return True

    with Journal.open(settings.journal.path) as journal:
        report = await Session(settings, TOKEN, journal).reconcile(
            load_spec(settings.spec.path), RunOptions(approve=person_thinks, deadline_s=0.8)
        )
    assert report.outcome is RunOutcome.APPLIED, report.error
    assert report.duration_s < 0.8
    assert names(emulator) == Counter({"G": 1})
