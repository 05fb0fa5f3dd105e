"""Fault injection: the misbehaviour a real vendor shows, on demand and reproducibly.

Every random choice comes from one seeded `random.Random`, so a test that sets `seed` sees the
same sequence of faults on every run.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

AMBIGUOUS_MODES = ("random", "503", "drop")


@dataclass
class Faults:
    """Knobs read on every /v1 request; change them at run time (Python or /_admin/faults)."""

    latency_s: float = 0.0
    rate_limit_per_s: float | None = None
    retry_after_missing_fraction: float = 0.0
    error_fraction: float = 0.0
    ambiguous_fraction: float = 0.0
    ambiguous_mode: str = "random"
    post_status: int = 201
    delete_status: int = 204
    clock_offset_s: int = 0
    """Added to the server's clock when it stamps a new group's `created_at`: a server whose
    clock runs behind (negative) or ahead (positive) of the client's."""
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # Setting the seed restarts the random sequence; setting the rate refills the bucket.
        if name == "seed":
            super().__setattr__("_rng", random.Random(value))
        elif name == "rate_limit_per_s":
            super().__setattr__("_bucket", _TokenBucket(value) if value else None)

    def validate(self) -> None:
        for name in ("retry_after_missing_fraction", "error_fraction", "ambiguous_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0:
            raise ValueError("rate_limit_per_s must be > 0 (or None for no limit)")
        if self.ambiguous_mode not in AMBIGUOUS_MODES:
            raise ValueError(f"ambiguous_mode must be one of {', '.join(AMBIGUOUS_MODES)}")
        if self.post_status not in (200, 201):
            raise ValueError("post_status must be 200 or 201")
        if self.delete_status not in (200, 204):
            raise ValueError("delete_status must be 200 or 204")
        if type(self.clock_offset_s) is not int:
            raise ValueError("clock_offset_s must be a whole number of seconds")

    def update(self, **changes: Any) -> None:
        """Apply several settings at once, all or nothing (the admin endpoint's entry point)."""
        known = {f.name for f in fields(self) if f.init}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        Faults(**{**self.as_dict(), **changes})  # validates without touching self
        for name, value in changes.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    # --- decisions, one per request -------------------------------------------------------

    def rate_limit(self) -> tuple[bool, int | None]:
        """(limited, Retry-After seconds or None when the header is to be omitted)."""
        wait = self._bucket.take() if self._bucket else None
        if wait is None:
            return False, None
        if self._rng.random() < self.retry_after_missing_fraction:
            return True, None
        return True, max(1, math.ceil(wait))

    def server_error(self) -> int | None:
        """A 5xx status to answer instead of handling the request, or None."""
        if self.error_fraction and self._rng.random() < self.error_fraction:
            return self._rng.choice((500, 502, 503))
        return None

    def ambiguous(self) -> str | None:
        """For a write: "503" or "drop" to garble the answer after the commit, or None."""
        if not (self.ambiguous_fraction and self._rng.random() < self.ambiguous_fraction):
            return None
        if self.ambiguous_mode == "random":
            return self._rng.choice(("503", "drop"))
        return self.ambiguous_mode


class _TokenBucket:
    """N requests per second sustained with bursts up to N, like most vendors' limiters."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float | None:
        """Spend a token; None on success, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return None
            return (1.0 - self.tokens) / self.rate
