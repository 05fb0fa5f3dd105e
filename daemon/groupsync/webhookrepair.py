"""The daemon's side of webhooks: keys from the `RepairQueue` repaired in batches, on its loop.

Level-triggered: an event is a hint, never the truth. A key whose events all showed the state
groupsync last applied (its own writes coming back, read again now from the journal, since the
run that made them may have finished after they arrived) costs nothing. The others are handed,
a batch at a time, to `repair` (the daemon's: a journaled run of those keys under its writer
lock, each group read again by id); while a full run holds that lock, the keys wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from groupsync.journal import Journal
from groupsync.metrics import Metrics
from groupsync.outcomes import RunOutcome
from groupsync.reconcile import RunReport
from groupsync.webhookqueue import Pending, RepairQueue
from groupsync.webhooks import applied_state, type_label

log = logging.getLogger("groupsync.webhooks")

BATCH = 100  # keys in one repair run at most; the client keeps api.max_concurrency on its GETs


class Repairer:
    def __init__(
        self,
        queue: RepairQueue,
        metrics: Metrics,
        journal: Callable[[], Journal],
        writer: asyncio.Lock,
        repair: Callable[[frozenset[str]], Awaitable[RunReport | None]],
    ) -> None:
        """`repair` runs the keys it is given; it is called with `writer` (the daemon's lock
        that every run holds) held."""
        self.queue = queue
        self.metrics = metrics
        self.journal = journal
        self.writer = writer
        self.repair = repair
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self.queue.on_offer = lambda: loop.call_soon_threadsafe(wake.set)
        self.metrics.webhook_queue.set_function(self.queue.depth)
        self._task = loop.create_task(self._serve(wake))

    async def close(self, timeout_s: float) -> None:
        """Take no more keys; let a batch in flight finish (bounded), then stop."""
        self.queue.on_offer = lambda: None
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("a webhook repair is still going after %.0fs: cancelling it", timeout_s)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _serve(self, wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            due, wait_s = self.queue.take_due(BATCH)
            if due:
                self._idle.clear()
                try:
                    await self._repair(due)
                except Exception:  # a bug: the keys wait for the next full run
                    log.exception("webhook repair crashed")
                    self._count(due, "error")
                finally:
                    self._idle.set()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait_s)

    async def _repair(self, due: list[Pending]) -> None:
        async with self.writer:  # after a run in flight: its writes are in the journal then
            await self._repair_locked(due)

    async def _repair_locked(self, due: list[Pending]) -> None:
        journal = self.journal()
        todo = []
        for entry in due:
            managed = journal.managed_group(entry.key)
            applied = managed[0].applied if managed is not None else None
            if (
                not entry.must_read
                and applied is not None
                and entry.shown == {applied_state(applied)}
            ):
                self._count([entry], "noop")
            else:
                todo.append(entry)
        if not todo:
            return
        report = await self.repair(frozenset(e.key for e in todo))
        if report is None:
            self._count(todo, "error")
            return
        for entry in todo:
            self._count([entry], _outcome(entry.key, report))
        log.info(
            "webhook repair of %d key(s): run %s %s",
            len(todo),
            report.run_id,
            report.summary(),
        )

    def _count(self, entries: list[Pending], outcome: str) -> None:
        now = time.monotonic()
        for entry in entries:
            for event_type, n in entry.events.items():
                self.metrics.webhook_events.labels(type_label(event_type), outcome).inc(n)
            if outcome in ("repaired", "noop"):
                self.metrics.webhook_repair.observe(now - entry.first_received)


def _outcome(key: str, report: RunReport) -> str:
    """`repaired` (changed, nothing to change, or handed to a full run), or `error`."""
    if report.outcome in (RunOutcome.ERROR, RunOutcome.REFUSED, RunOutcome.INTERRUPTED):
        return "error"
    failed = {k for k, _ in report.result.failures} if report.result else set()
    failed |= {e.key for e in report.plan.errors} if report.plan else set()
    if key in failed:
        return "error"
    changed = {c.key for c in report.plan.changes} if report.plan else set()
    return "repaired" if key in changed or key in report.deferred else "noop"
