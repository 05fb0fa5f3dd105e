"""What the client did, measured at the server: tests assert exact call counts and limits."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

DROPPED = 0
"""The status recorded for a request whose connection the emulator dropped (no answer)."""


class RequestCounters:
    """Counts by (method, path template, status), plus concurrency and arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.request_times: list[float] = []  # time.monotonic() at arrival, in order

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.request_times.append(time.monotonic())

    def finished(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.counts[(method, path, status)] += 1

    def count(
        self, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        """Sum over every key matching the given parts (None matches anything)."""
        with self._lock:
            return sum(
                n
                for (m, p, s), n in self.counts.items()
                if (method is None or m == method)
                and (path is None or p == path)
                and (status is None or s == status)
            )

    def max_per_second(self) -> int:
        """The most requests that arrived within any one-second window."""
        with self._lock:
            times = list(self.request_times)
        best = start = 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.max_in_flight = self.in_flight
            self.request_times.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = [
                {"method": m, "path": p, "status": s, "count": n}
                for (m, p, s), n in sorted(self.counts.items())
            ]
            return {
                "counts": counts,
                "total": sum(self.counts.values()),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }
