"""Whether the daemon's runs are finishing: what keeps the systemd watchdog pinged.

Pinging from the event loop alone proves only that the loop turns. A run wedged on a server that
drips one byte at a time leaves the loop healthy while nothing gets done, so the watchdog is
pinged only while no run has been in flight, settling nothing, for longer than the limit:
past it, systemd's WatchdogSec= restarts the daemon, and /healthz says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from groupsync.sdnotify import Notifier

log = logging.getLogger("groupsync.daemon")


class Liveness:
    """When the run in flight started and last settled a change, and whether that is too long ago.

    A long apply that keeps settling changes (a first apply of thousands of groups) is alive
    however long it takes; a run that settles nothing for longer than the limit is not.
    """

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._started: float | None = None
        self._progress: float | None = None

    def started(self) -> None:
        self._started = self._progress = self._clock()

    def progressed(self) -> None:
        """A change of the run in flight settled."""
        if self._started is not None:
            self._progress = self._clock()

    def finished(self) -> None:
        self._started = self._progress = None

    def in_flight_s(self) -> float:
        """How long the run in flight has been going; 0 when none is."""
        return 0.0 if self._started is None else self._clock() - self._started

    def stalled(self) -> str | None:
        """Why runs are not finishing, or None while they are."""
        if self._progress is None:
            return None
        idle = self._clock() - self._progress
        if idle <= self.limit_s:
            return None
        return (
            f"a run has been going for {self.in_flight_s():.0f}s, {idle:.0f}s without settling"
            f" a change (limit {self.limit_s:.0f}s): runs are not finishing"
        )


async def keep_watchdog(notifier: Notifier, liveness: Liveness, interval_s: float) -> None:
    """Ping every `interval_s` while runs finish; withhold the pings while they do not."""
    withheld = False
    while True:
        stalled = liveness.stalled()
        if stalled is None:
            if withheld:
                log.warning("runs are finishing again: the watchdog is pinged again")
            withheld = False
            notifier.watchdog()
        elif not withheld:
            withheld = True
            log.error("%s; the watchdog is no longer pinged: systemd restarts the daemon", stalled)
            notifier.status(stalled)
        await asyncio.sleep(interval_s)
