"""The daemon's backoff on outages: scheduled runs skipped after runs that could not use the API.

After k failed runs in a row the next `schedule.ticks_to_skip(k)` ticks are skipped (gaps of
1, 2, 4, ... periods, capped at 15 minutes), so a down API is not hammered and comes back to a
daemon that tries again within the cap.
"""

from __future__ import annotations

from datetime import timedelta

from groupsync.schedule import ticks_to_skip


class Backoff:
    """Failed runs in a row, and the scheduled ticks still to skip because of them."""

    def __init__(self, period: timedelta) -> None:
        self.period = period
        self.failures = 0
        self.to_skip = 0

    def failed(self) -> None:
        self.failures += 1
        self.to_skip = ticks_to_skip(self.failures, self.period)

    def reset(self) -> int:
        """Forget the failures (a usable API, or an operator's reload); how many there were."""
        failures, self.failures, self.to_skip = self.failures, 0, 0
        return failures

    def skip_tick(self) -> bool:
        """True when this tick is to be skipped (and counts it)."""
        if self.to_skip <= 0:
            return False
        self.to_skip -= 1
        return True
