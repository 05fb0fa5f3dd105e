"""A run's own deadline: a run that cannot finish is ended, so the next one can start.

`api.timeout_s` bounds each request; the deadline bounds the run by what its requests may take:

    deadline = max(60 s, 3 × timeout_s)          a floor: a few requests that take their full time
             + timeout_s × pages read            list pages are read one after another
             + 2 × changes × max(timeout_s / max_concurrency, 1 / max_requests_per_s)
                                                 one or two writes per change, sent side by side
                                                 and paced by the client's rate limit

The pages term grows as answers arrive, so a large account is never cut short for being large,
while a server that stops answering (or drips its answers) is caught once the floor is spent.
The changes term joins when the plan is known. Time spent waiting at a confirmation prompt
does not count, for the deadline or for the run's reported duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from groupsync.api import ClientStats
from groupsync.config import ApiSettings
from groupsync.stopping import RunStop

FLOOR_S = 60.0
FLOOR_TIMEOUTS = 3
WRITES_PER_CHANGE = 2


class RunDeadline:
    """The clock of one run: how long it has worked, and how long it may.

    `fixed_s` replaces the formula (tests, or an operator who knows better).
    """

    def __init__(
        self, api: ApiSettings, stats: ClientStats, *, fixed_s: float | None = None
    ) -> None:
        self.api = api
        self.stats = stats
        self.fixed_s = fixed_s
        self.changes = 0  # set once the plan is known
        self._started = time.monotonic()
        self._paused_s = 0.0

    def pages_read(self) -> int:
        """Successful GETs so far: every read a run makes is a page or one group."""
        return sum(
            n
            for (method, status), n in self.stats.by_method_status.items()
            if method == "GET" and status.startswith("2")
        )

    def budget_s(self) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        api = self.api
        per_write_s = max(api.timeout_s / api.max_concurrency, 1 / api.max_requests_per_s)
        return (
            max(FLOOR_S, FLOOR_TIMEOUTS * api.timeout_s)
            + api.timeout_s * self.pages_read()
            + WRITES_PER_CHANGE * self.changes * per_write_s
        )

    def elapsed_s(self) -> float:
        """Time the run has worked: a wait at a prompt is not counted."""
        return time.monotonic() - self._started - self._paused_s

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Around a wait for a person: the run is not working meanwhile."""
        since = time.monotonic()
        try:
            yield
        finally:
            self._paused_s += time.monotonic() - since

    def describe(self) -> str:
        budget = self.budget_s()
        if self.fixed_s is not None:
            return f"the run deadline of {budget:g}s passed"
        return (
            f"the run deadline of {budget:.0f}s passed (for {self.pages_read()} pages read and"
            f" {self.changes} changes at api.timeout_s {self.api.timeout_s:g})"
        )

    async def watch(self, stop: RunStop) -> None:
        """Stop the run at once when its deadline passes; the deadline only ever moves later."""
        left = self.budget_s() - self.elapsed_s()
        while left > 0:  # woken at the old deadline: more pages or the plan may have moved it
            await asyncio.sleep(left)
            left = self.budget_s() - self.elapsed_s()
        stop.now(self.describe())
