"""Fault injection: the misbehaviour a real vendor shows, on demand and reproducibly.

Every random choice comes from one seeded `random.Random`, so a test that sets `seed` sees the
same sequence of faults on every run.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

AMBIGUOUS_MODES = ("random", "503", "drop")
ECHO_MODES = ("type", "message", "html")
WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})


def _fraction(value: Any) -> bool:
    return 0.0 <= value <= 1.0


def _ids_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(i, str) for i in value))


# One rule per setting, checked in this order: (name, accepts the value, what it must be).
_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("retry_after_missing_fraction", _fraction, "must be between 0 and 1"),
    ("error_fraction", _fraction, "must be between 0 and 1"),
    ("ambiguous_fraction", _fraction, "must be between 0 and 1"),
    ("latency_s", lambda v: v >= 0, "must be >= 0"),
    ("drip_s", lambda v: v >= 0, "must be >= 0"),
    ("endless_pages", lambda v: isinstance(v, bool), "must be true or false"),
    ("rate_limit_per_s", lambda v: v is None or v > 0, "must be > 0 (or None for no limit)"),
    (
        "ambiguous_mode",
        lambda v: v in AMBIGUOUS_MODES,
        f"must be one of {', '.join(AMBIGUOUS_MODES)}",
    ),
    ("post_status", lambda v: v in (200, 201), "must be 200 or 201"),
    ("delete_status", lambda v: v in (200, 204), "must be 200 or 204"),
    (
        "echo_auth",
        lambda v: v is None or v in ECHO_MODES,
        f"must be null or one of {', '.join(ECHO_MODES)}",
    ),
    ("override_fields", lambda v: isinstance(v, dict), "must be an object of field: value"),
    ("override_ids", _ids_or_none, "must be a list of ids (or null for every item)"),
    ("clock_offset_s", lambda v: type(v) is int, "must be a whole number of seconds"),
    ("webhook_dup_rate", _fraction, "must be between 0 and 1"),
    ("webhook_delay_ms", lambda v: v >= 0, "must be >= 0"),
)


@dataclass
class Faults:
    """Knobs read on every /v1 request; change them at run time (Python or /_admin/faults)."""

    latency_s: float = 0.0
    drip_s: float = 0.0
    """Send each answer's body one byte at a time, this far apart: a server that is never
    silent for long, yet never done (0: off)."""
    endless_pages: bool = False
    """List endpoints answer `has_more: true` for ever, each page with new ids."""
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
    # A server or proxy that echoes the request's Authorization header in its 400 answers:
    # in the error's "type", in its "message", or deep in an HTML page.
    echo_auth: str | None = None
    echo_auth_writes_only: bool = False
    # Answers off the contract: `override_fields` set on every group or contact object answered
    # whose id is in `override_ids` (every one when None), and, with `duplicate_ids`, every list
    # page after the first starting again with the item its cursor names, as offset paging
    # does when items are inserted meanwhile.
    override_fields: dict[str, Any] = field(default_factory=dict)
    override_ids: list[str] | None = None
    duplicate_ids: bool = False
    # Webhook deliveries (with --webhook-url): this fraction sent twice, each held back by a
    # random 0..N ms, so they arrive out of order.
    webhook_dup_rate: float = 0.0
    webhook_delay_ms: float = 0.0

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
        for name, ok, rule in _CHECKS:
            if not ok(getattr(self, name)):
                raise ValueError(f"{name} {rule}")

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

    def echo(self, method: str) -> str | None:
        """How to echo this request's Authorization header in a 400 answer, or None."""
        if self.echo_auth_writes_only and method not in WRITES:
            return None
        return self.echo_auth

    def override(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj`, an object about to be answered, with `override_fields` set if it is targeted."""
        if self.override_fields and (
            self.override_ids is None or obj.get("id") in self.override_ids
        ):
            obj.update(self.override_fields)
        return obj

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
