"""POST /webhooks/ecampus: signed eCampus events turned into keys to repair.

What a delivery goes through, in order, each step before the next reads anything more:

1. the signature (`webhooksig`) over the exact bytes received: unsigned or mis-signed, 401;
2. the shape: not JSON, or not `{"id", "type", "payload"}`, 400 (a `group.*` payload must be a
   group object as the API gives it);
3. the event id, recorded in the journal: one received before is a repeat, 200 and nothing;
4. the group: one the journal does not manage, or whose payload equals the state groupsync last
   applied to it (its own write coming back), costs nothing, 202;
5. the key, into the bounded `RepairQueue`: 202 (503 when full: eCampus delivers again).

An unknown event type is 202 and ignored. The daemon repairs in the background
(`webhookrepair`); the answer waits only for the journal's two small statements. The secrets
stay in `Secret`s, compared in constant time, and are never put into a message or a metric.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupsync.canonical import canonical_json
from groupsync.contract import Contract, Malformed
from groupsync.journal import Journal, JournalError
from groupsync.metrics import Metrics
from groupsync.models import Group
from groupsync.plan import AppliedState
from groupsync.secret import Secret, redact_secrets
from groupsync.webhookqueue import RepairQueue
from groupsync.webhooksig import HEADER, verify

log = logging.getLogger("groupsync.webhooks")

GROUP_EVENTS = frozenset({"group.created", "group.updated", "group.deleted"})
MAX_ID = 200  # characters of an event id kept in the journal
WEBHOOK_TRIGGER = "webhook"  # runs.trigger of a repair
KEEP_DAYS = 7  # event ids are kept this long: a repeat within it is recognised


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    payload: dict[str, Any]


def type_label(event_type: str | None) -> str:
    """The metric label for an event type: the group types by name, anything else `other`, so
    whoever holds the secret cannot grow the metric's series without bound."""
    return event_type if event_type in GROUP_EVENTS else "other"


def parse_event(body: bytes) -> Event | str:
    """The event, or what is wrong with it."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "the body is not JSON"
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    event_id, event_type, payload = data.get("id"), data.get("type"), data.get("payload")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID:
        return f"id must be a string of 1..{MAX_ID} characters"
    if not isinstance(event_type, str) or not event_type:
        return "type must be a non-empty string"
    if not isinstance(payload, dict):
        return "payload must be an object"
    return Event(event_id, event_type, payload)


def shown_state(group: Group, applied: AppliedState | None) -> str:
    """A digest of what the payload shows, in the terms of what groupsync applies (members only
    when it manages them): equal digests, equal states."""
    managed_members = applied is not None and applied.members is not None
    state = {
        "name": group.name,
        "description": group.description,
        "avatar_url": group.avatar_url,
        "archived": group.archived,
        "members": sorted(group.members) if managed_members else None,
    }
    return hashlib.sha256(canonical_json(state).encode()).hexdigest()


def applied_state(applied: AppliedState) -> str:
    """The same digest of what groupsync last applied."""
    state = {
        "name": applied.name,
        "description": applied.description,
        "avatar_url": applied.avatar_url,
        "archived": applied.archived,
        "members": None if applied.members is None else sorted(applied.members),
    }
    return hashlib.sha256(canonical_json(state).encode()).hexdigest()


class Receiver:
    """The receiver's work for one delivery, run in a worker thread of the HTTP service.

    It writes event ids through a journal connection of its own (WAL: a short write that waits
    at most for one of the daemon's), so an answer never waits for the daemon's loop, which a
    large plan can keep busy for a second.
    """

    def __init__(
        self,
        secrets: tuple[Secret, ...],
        journal_path: Path,
        queue: RepairQueue,
        metrics: Metrics,
    ) -> None:
        self.secrets = secrets
        self.journal_path = journal_path
        self.queue = queue
        self.metrics = metrics
        self._contract = Contract(redact_secrets)
        self._lock = threading.Lock()
        self._journal: Journal | None = None

    def receive(self, body: bytes, headers: dict[str, str]) -> Answer:
        received = time.monotonic()
        if not verify(self.secrets, body, headers.get(HEADER)):
            self._count(None, "rejected")
            return Answer(401, f"unauthorized: no valid {HEADER}\n")
        event = parse_event(body)
        if isinstance(event, str):
            self._count(None, "rejected")
            return Answer(400, f"bad event: {event}\n")
        try:
            with self._lock:
                return self._take(event, received)
        except JournalError as exc:
            log.error("webhook event %s not taken: %s", event.id, exc)
            self._count(event.type, "error")
            return Answer(503, "the journal cannot record the event now; deliver it again\n")

    def _take(self, event: Event, received: float) -> Answer:
        group: Group | None = None
        if event.type in GROUP_EVENTS:
            try:
                group = self._group(event)
            except Malformed as exc:
                self._count(event.type, "rejected")
                return Answer(400, f"bad event: payload: {exc}\n")
        journal = self._open()
        if not journal.record_event(event.id, event.type):
            self._count(event.type, "duplicate")
            return Answer(200, "duplicate: already received\n")
        if group is None:
            self._count(event.type, "noop")
            return Answer(202, f"ignored: {type_label(event.type)} events are not used\n")
        managed = journal.managed_by_group_id(group.id)
        if managed is None:
            self._count(event.type, "unmanaged")
            return Answer(202, "unmanaged: not a group groupsync manages\n")
        shown = None
        if event.type != "group.deleted":
            shown = shown_state(group, managed.applied)
            if managed.applied is not None and shown == applied_state(managed.applied):
                self._count(event.type, "noop")
                return Answer(202, "noop: the group is as groupsync left it\n")
        if not self.queue.offer(managed.key, group.id, event.type, shown, received):
            journal.unrecord_event(event.id)
            self._count(event.type, "error")
            log.warning("webhook queue full: event %s refused (503)", event.id)
            return Answer(503, "busy: too many groups wait for repair; deliver it again\n")
        return Answer(202, "queued\n")

    def _group(self, event: Event) -> Group:
        if event.type == "group.deleted" and set(event.payload) == {"id"}:
            return self._contract.group({**_EMPTY_GROUP, "id": event.payload["id"]})
        return self._contract.group(event.payload)

    def _open(self) -> Journal:
        if self._journal is None:
            self._journal = Journal.open(self.journal_path)
        return self._journal

    def _count(self, event_type: str | None, outcome: str) -> None:
        self.metrics.webhook_events.labels(type_label(event_type), outcome).inc()

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None


# A deletion may carry only the id: the rest is never read (a deletion is always re-read).
_EMPTY_GROUP = {"name": "-", "contacts": [], "created_at": 0}
