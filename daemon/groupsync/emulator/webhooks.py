"""Signed events for every change to a group, POSTed to a webhook URL, as eCampus sends them.

`{"id", "type", "payload"}` with `x-ecampus-signature` (the hex HMAC-SHA256 of the body), from
one thread of its own, so a slow receiver never slows the API down. Faults, from `Faults`:
`webhook_delay_ms` holds each delivery back by a random 0..N ms (so events overtake each other,
as real deliveries do), `webhook_dup_rate` delivers that fraction twice. A delivery answered 5xx
or not answered at all is tried again, a few times, as the vendor does.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from groupsync.emulator.faults import Faults
from groupsync.secret import Secret
from groupsync.webhooksig import HEADER, sign

ATTEMPTS = 3
RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where events go, and the secret that signs them."""

    url: str
    secret: Secret


class WebhookSender:
    def __init__(self, url: str, secret: Secret, faults: Faults) -> None:
        self.url = url
        self.secret = secret
        self.faults = faults
        self.sent = 0  # deliveries answered 2xx
        self.failed = 0  # deliveries given up
        self.statuses: dict[int, int] = {}
        self._rng = random.Random(faults.seed)
        self._heap: list[tuple[float, int, bytes, int]] = []  # (due, order, body, attempt)
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._deliver, name="emulator-webhooks", daemon=True)
        self._thread.start()

    def event(self, event_type: str, group: dict[str, Any]) -> None:
        """Queue the event of one change (called by the state, under its lock: only queues)."""
        body = json.dumps(
            {"id": "evt_" + secrets.token_hex(8), "type": event_type, "payload": group}
        ).encode()
        with self._cv:
            copies = 2 if self._rng.random() < self.faults.webhook_dup_rate else 1
            for _ in range(copies):
                self._push(body, 1)
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)

    def _push(self, body: bytes, attempt: int, after_s: float = 0.0) -> None:
        delay_s = self._rng.uniform(0, self.faults.webhook_delay_ms) / 1000
        due = time.monotonic() + after_s + delay_s
        heapq.heappush(self._heap, (due, next(self._order), body, attempt))

    def _deliver(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while True:
                with self._cv:
                    while not self._closed and (
                        not self._heap or self._heap[0][0] > time.monotonic()
                    ):
                        wait = self._heap[0][0] - time.monotonic() if self._heap else None
                        self._cv.wait(wait)
                    if self._closed:
                        return
                    _, _, body, attempt = heapq.heappop(self._heap)
                self._post(client, body, attempt)

    def _post(self, client: httpx.Client, body: bytes, attempt: int) -> None:
        headers = {"Content-Type": "application/json", HEADER: sign(self.secret, body)}
        try:
            status = client.post(self.url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            status = 0
        with self._cv:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                self.sent += 1
            elif (status == 0 or status >= 500) and attempt < ATTEMPTS:
                self._push(body, attempt + 1, after_s=RETRY_S)
            else:
                self.failed += 1
