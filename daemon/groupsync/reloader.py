"""SIGHUP handling: reloads run one at a time, off the event loop, and a burst costs two.

Loading config and spec takes a while (a big spec, `git` for its commit). Done on the event loop
once per signal, a burst of SIGHUPs would queue loads back to back and hold SIGTERM up behind
them. So a request that arrives while a load is running or queued only marks one more load as
wanted, loads start at most once per `min_gap_s` (the first at once), and loading happens in a
thread, leaving the loop free to handle signals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

from groupsync.errors import GroupsyncError

T = TypeVar("T")


class Reloader(Generic[T]):
    """Calls `load` in a thread and hands its result to `adopt` (or its GroupsyncError to
    `refused`); at most one load runs and one waits. `starting` is called before each load.

    A burst of requests costs two loads: the first at once, the second (which sees every file
    as of the last request) one gap later.
    """

    def __init__(
        self,
        load: Callable[[], T],
        adopt: Callable[[T], None],
        refused: Callable[[GroupsyncError], None],
        *,
        starting: Callable[[], object] = lambda: None,
        min_gap_s: float = 1.0,
    ) -> None:
        self._load = load
        self._adopt = adopt
        self._refused = refused
        self._starting = starting
        self._min_gap_s = min_gap_s
        self._wanted = False
        self._last_start: float | None = None  # loop time
        self._task: asyncio.Task[None] | None = None
        self.loads = 0  # loads started: what a burst of requests cost

    def request(self) -> None:
        """Ask for a reload: starts one now, or marks one as wanted after the one running."""
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted:
            if self._last_start is not None:
                await asyncio.sleep(max(0.0, self._last_start + self._min_gap_s - loop.time()))
            self._wanted = False
            self._last_start = loop.time()
            self.loads += 1
            self._starting()
            try:
                new = await asyncio.to_thread(self._load)
            except GroupsyncError as e:
                self._refused(e)
                continue
            self._adopt(new)

    async def close(self) -> None:
        """Drop wanted reloads and stop waiting for the one running (its thread ends by itself)."""
        self._wanted = False
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
