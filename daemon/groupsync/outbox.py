"""Posting a run's messages: each one journaled `pending` before its POST, settled after.

The API cannot list messages, so a POST whose answer was lost cannot be checked: it is
`unknown` and never sent again (at most once). A POST that provably never left is retried by
the client like any request. The outbox's key (run, group key, kind) keeps one run from posting
a message twice, and a crashed run's `pending` rows become `unknown` (`Journal.recover_messages`).

When: a welcome, rename or restore notice goes after its change applied, never for one that
failed; an archive notice goes just before the archive (an archived group's chat may refuse
posts), and not again while that archive has not happened (a crash, a failed PUT). At most one
message per second into one conversation; the client keeps all of them within
`api.max_requests_per_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from groupsync.api import AmbiguousWrite, ApiError, Client, call_trace
from groupsync.journal import Journal
from groupsync.models import Group
from groupsync.outcomes import MessageStatus
from groupsync.plan import Change, Message
from groupsync.stopping import RunStop

log = logging.getLogger("groupsync.outbox")

MIN_GAP_S = 1.0  # between two messages into one conversation
BEFORE = "on_archive"  # the one kind posted before its change


class _Pacer:
    """At most one message per MIN_GAP_S into each conversation."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.locks: dict[str, asyncio.Lock] = {}
        self.next_at: dict[str, float] = {}

    async def wait(self, conversation_id: str) -> None:
        loop = asyncio.get_running_loop()
        async with self.locks.setdefault(conversation_id, asyncio.Lock()):
            delay = self.next_at.get(conversation_id, 0.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.next_at[conversation_id] = loop.time() + self.gap_s


class Courier:
    """Posts one run's messages with a client that may write."""

    def __init__(
        self,
        client: Client,
        journal: Journal,
        run_id: int,
        messages: Sequence[Message] = (),
        *,
        stop: RunStop | None = None,
        gap_s: float = MIN_GAP_S,
    ) -> None:
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self.messages = messages
        self.stop = stop if stop is not None else RunStop()
        self.pacer = _Pacer(gap_s)

    async def before(self, change: Change) -> None:
        """Post `change`'s archive notice, if it has one; apply calls it before the write."""
        for m in self.messages:
            if m.key != change.key or m.kind != BEFORE:
                continue
            if self.journal.archive_announced(m.key):
                why = "already posted before an archive that has not happened yet"
                self.record(m.key, m.kind, m.text, m.conversation_id, why)
            else:
                await self.post(m.key, m.kind, m.text, m.conversation_id)

    async def after(self, applied: Mapping[str, Group], workers: int) -> None:
        """Post the messages of the changes that applied (`applied`: key -> the group as the
        API answered); the others are recorded `skipped`, with why."""
        due = []
        for m in self.messages:
            group = applied.get(m.key)
            if m.kind == BEFORE or group is None or self.stop.requested.is_set():
                why = (
                    f"not posted: {self.stop.reason}"
                    if self.stop.requested.is_set()
                    else "not posted: its change did not apply"
                )
                self.record(m.key, m.kind, m.text, m.conversation_id, why)  # no-op if posted
                continue
            due.append((m, group.conversation_id or m.conversation_id))
        queue = iter(due)

        async def worker() -> None:
            for m, conversation in queue:
                if self.stop.requested.is_set():
                    self.record(
                        m.key, m.kind, m.text, conversation, f"not posted: {self.stop.reason}"
                    )
                else:
                    await self.post(m.key, m.kind, m.text, conversation)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(max(1, workers), len(due))):
                tg.create_task(worker())

    def record(self, key: str, kind: str, text: str, conversation_id: str | None, why: str) -> None:
        """A message not posted, in the outbox with the reason (nothing if already there)."""
        self.journal.begin_message(
            self.run_id,
            key,
            kind,
            text,
            conversation_id=conversation_id,
            status=MessageStatus.SKIPPED,
            error=why,
        )

    async def post(
        self,
        key: str,
        kind: str,
        text: str,
        conversation_id: str | None,
        *,
        problems: str | None = None,
    ) -> MessageStatus:
        """Journal, pace, POST, settle. Never raises for the API: a message is not a change."""
        if conversation_id is None:
            self.record(key, kind, text, None, "not posted: the group has no conversation")
            return MessageStatus.SKIPPED
        row = self.journal.begin_message(
            self.run_id, key, kind, text, conversation_id=conversation_id, problems=problems
        )
        if row is None:
            return MessageStatus.SKIPPED  # this run has it already
        status, message_id, error = MessageStatus.FAILED, None, "stopped before posting"
        with call_trace() as trace:
            try:
                await self.pacer.wait(conversation_id)
                status, error = MessageStatus.UNKNOWN, "abandoned in flight; never sent again"
                answer = await self.client.post_message(conversation_id, text)
            except asyncio.CancelledError:
                raise
            except AmbiguousWrite as exc:
                status, error = MessageStatus.UNKNOWN, f"{exc}; never sent again"
            except ApiError as exc:
                status, error = MessageStatus.FAILED, str(exc)
            else:
                status, message_id, error = MessageStatus.SENT, str(answer["id"]), None
            finally:
                self.journal.settle_message(
                    row,
                    status=status,
                    message_id=message_id,
                    attempts=trace.attempts,
                    http_status=trace.status,
                    error=error,
                )
        if status is not MessageStatus.SENT:
            log.warning("message %s %s: %s (%s)", kind, key, status, error)
        return status
