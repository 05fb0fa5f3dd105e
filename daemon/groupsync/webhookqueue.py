"""The keys waiting for a webhook's repair: bounded, one entry a key, debounced.

Filled from the HTTP service's threads, emptied on the daemon's loop, so every method holds one
lock. An event only says "look at this key again": a burst of events for one key is one entry
(its earliest receipt, how many events, what they showed), so a flood of events grows nothing
but counters, and the number of entries never passes `capacity`. A key is handed out at most
once per `debounce`, the first time at once: the first event of a quiet key is repaired
without waiting, the rest of a burst by one more repair at the window's end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SHOWN = 8
"""States remembered per key; past it the key is simply re-read (one GET)."""


@dataclass(slots=True)
class Pending:
    key: str
    group_id: str
    first_received: float  # time.monotonic() of the earliest event waiting
    events: dict[str, int] = field(default_factory=dict)  # by event type
    shown: set[str] = field(default_factory=set)  # what the events' payloads showed (digests)
    must_read: bool = False  # an event showed no state (a deletion) or too many states

    @property
    def count(self) -> int:
        return sum(self.events.values())


class RepairQueue:
    def __init__(
        self,
        *,
        capacity: int,
        debounce_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.debounce_s = debounce_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._last_start: dict[str, float] = {}  # key -> when its last repair was handed out
        self.on_offer: Callable[[], None] = lambda: None  # wakes the consumer (set by it)

    def offer(
        self, key: str, group_id: str, event_type: str, shown: str | None, received: float
    ) -> bool:
        """Add an event's key; False when the queue is full and the key is not in it already."""
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                if len(self._pending) >= self.capacity:
                    return False
                entry = self._pending[key] = Pending(key, group_id, received)
            entry.group_id = group_id
            entry.events[event_type] = entry.events.get(event_type, 0) + 1
            if shown is None or len(entry.shown) >= MAX_SHOWN:
                entry.must_read = True
            else:
                entry.shown.add(shown)
        self.on_offer()
        return True

    def depth(self) -> int:
        with self._lock:
            return len(self._pending)

    def take_due(self, limit: int) -> tuple[list[Pending], float | None]:
        """Up to `limit` entries whose debounce has passed, oldest first, taken out; and the
        seconds until the next one is due (None: nothing else waits)."""
        now = self._clock()
        with self._lock:
            self._forget_quiet(now)
            due, wait = [], None
            for entry in sorted(self._pending.values(), key=lambda e: e.first_received):
                ready_at = self._last_start.get(entry.key, -float("inf")) + self.debounce_s
                if ready_at <= now and len(due) < limit:
                    due.append(entry)
                else:
                    left = max(0.0, ready_at - now)
                    wait = left if wait is None else min(wait, left)
            for entry in due:
                del self._pending[entry.key]
                self._last_start[entry.key] = now
            return due, wait

    def _forget_quiet(self, now: float) -> None:
        """Drop debounce marks that no longer hold anything back (keeps the map bounded)."""
        if len(self._last_start) > self.capacity:
            cutoff = now - self.debounce_s
            for key in [k for k, t in self._last_start.items() if t <= cutoff]:
                del self._last_start[key]
