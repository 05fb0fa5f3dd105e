"""Plan -> API writes, each one journaled `pending` before it is sent and settled after.

Phases run in order (creates/restores, updates/additions, removals, archives/deletes) so a plan
interrupted half-way has added before it removed; within a phase a fixed pool of workers pulls
changes from a shared queue, and the client bounds what is really in flight and the request rate.

Never two groups for one key. A POST is not idempotent and the API has no idempotency key, so
after an ambiguous create (5xx, dropped connection, timeout) apply re-lists and adopts the group
with that exact name that was not in the listing the plan read (`seen_ids`) and that no key
manages. Server and client clocks are never compared: a server whose clock is an hour off must
not make a committed create look like one that did nothing. Creates of one name run one after
another, so a sibling key's new group is already managed when the next one looks. Only when
nothing is found, and the server provably finished with the first request (it answered, and not
with a gateway timeout), is the create sent once more; a timed-out POST may still be running on
the server, so it is left to the next plan, whose adopt-by-name picks up a late commit instead
of creating a second group. At most two POSTs per change per run.

An adoption of a group that already looks right sends nothing: it only maps the key in the
journal. A phase records those first, ADOPT_BATCH to a journal transaction, each row `applied`
at once (never `pending`: no request, so no remote effect to be uncertain about), instead of
three transactions and a task apiece; an account of 100,000 groups adopted from an `export`
is 100,000 of them.

A run asked to stop (`RunStop`) starts no further change and journals each one it did not start
as `skipped`; a stop at once abandons the changes in flight and journals them `unknown` (sent,
answer never seen: the next plan re-reads the group). No row is left `pending`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx

from groupsync.api import AmbiguousWrite, ApiError, Client, NotFound, ServerError, call_trace
from groupsync.errors import GroupsyncError
from groupsync.journal import Journal, JournalError
from groupsync.models import UNSET, Group, Members
from groupsync.outcomes import ChangeStatus, ExitCode
from groupsync.plan import Action, AppliedState, Change, Plan
from groupsync.spec import DesiredGroup
from groupsync.stopping import RunStop

log = logging.getLogger("groupsync.apply")

T = TypeVar("T")

DEFAULT_WORKERS = 8
ADOPT_BATCH = 1000  # adoptions that send nothing, per journal transaction


class UnsafePlan(GroupsyncError):
    """A plan over the safety limits reached apply: nothing was written."""

    exit_code = ExitCode.UNSAFE


@dataclass
class ApplyResult:
    """`failures` names every failed change's key; `skipped` counts changes never sent: for keys
    the plan itself reported an error for (reconcile reports those separately), or not started
    because the run was stopped; `unknown` counts changes abandoned in flight by a stop."""

    applied: int = 0
    failed: int = 0
    skipped: int = 0
    unknown: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)  # key -> as written, if applied


@dataclass(frozen=True, slots=True)
class ApplyControl:
    """What steers an apply from outside: the run's stop, checked before each change starts (see
    groupsync.stopping), and who hears of each change: `on_start(change)` as it is sent,
    `on_progress(change, status)` once as it settles (applied, failed, skipped or unknown);
    `before_archive(change)` is awaited just before an existing group is archived (its notice
    goes out first: an archived group's chat may refuse posts)."""

    stop: RunStop = field(default_factory=RunStop)
    on_start: Callable[[Change], None] | None = None
    on_progress: Callable[[Change, ChangeStatus], None] | None = None
    before_archive: Callable[[Change], Awaitable[None]] | None = None


@dataclass
class _Outcome:
    """What one change's API calls did, for its journal row."""

    attempts: int = 0
    http_status: int | None = None
    group_id: str | None = None
    group: Group | None = None  # the API's answer to the last write
    notes: list[str] = field(default_factory=list)


class _ChangeFailed(Exception):
    """A change that cannot complete, with what the journal should say about it."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


def applied_state(group: Group) -> AppliedState:
    """The state a successful write left: the server's answer is the truth about the group."""
    return AppliedState(
        name=group.name,
        description=group.description,
        avatar_url=group.avatar_url,
        members=group.members,
        archived=group.archived,
    )


def _unwritten_state(change: Change, desired: DesiredGroup | None) -> AppliedState:
    """For an adoption that needed no write: the spec's values, None where the spec is silent."""

    def value(name: str) -> str | None:
        v = getattr(desired, name, UNSET) if desired is not None else UNSET
        return None if v is UNSET else v

    return AppliedState(
        name=change.name,
        description=value("description"),
        avatar_url=value("avatar_url"),
        members=desired.members if desired is not None else None,
        archived=desired.archived if desired is not None else False,
    )


def _update_fields(change: Change) -> dict[str, Any]:
    """One PUT's body: the fields that change, the full member list, the archive flag."""
    body: dict[str, Any] = {f.field: f.new for f in change.fields}
    if change.members is not None:
        body["members"] = change.members
    if change.set_archived is not None:
        body["archived"] = change.set_archived
    return body


def _shows(group: Group, change: Change) -> bool:
    """True when the group already looks the way the change would make it."""
    return (
        all(getattr(group, f.field) == f.new for f in change.fields)
        and (change.members is None or group.members == Members(change.members))
        and (change.set_archived is None or group.archived == change.set_archived)
    )


def _may_still_be_running(exc: AmbiguousWrite) -> bool:
    """A timeout (ours, or a gateway's 504) may leave the POST running server-side."""
    return exc.status == 504 or isinstance(exc.__cause__, httpx.TimeoutException)


def find_created(groups: list[Group], name: str, *known: Collection[str]) -> list[Group]:
    """Groups an unsettled create of `name` may have made: that name, and an id in none of
    `known` (the ids listed before the POST was sent, the ids the journal manages)."""
    return [g for g in groups if g.name == name and not any(g.id in ids for ids in known)]


def _several(name: str, found: list[Group]) -> str:
    ids = ", ".join(sorted(g.id for g in found))
    return (
        f"{len(found)} groups named {name!r} are new and unmanaged ({ids}); none adopted:"
        " delete the extra ones or pin one with `id:`"
    )


def _settled(
    change: Change, work: asyncio.Future[None], outcome: _Outcome
) -> tuple[ChangeStatus, str | None, int | None]:
    """(status, error, HTTP status) for the journal row of a change whose work has ended."""
    exc = work.exception()
    if exc is None:
        return ChangeStatus.APPLIED, None, outcome.http_status
    if isinstance(exc, _ChangeFailed):
        return ChangeStatus.FAILED, exc.message, exc.http_status
    if isinstance(exc, ApiError):
        return ChangeStatus.FAILED, str(exc), exc.status
    if isinstance(exc, GroupsyncError):  # e.g. the journal refusing a second key for one group
        return ChangeStatus.FAILED, str(exc), outcome.http_status
    # A bug must not leave the other changes unapplied.
    log.error("change %s %s: unexpected error", change.action, change.key, exc_info=exc)
    return ChangeStatus.FAILED, f"unexpected error: {exc!r}", None


class _Applier:
    def __init__(
        self,
        desired: Mapping[str, DesiredGroup],
        client: Client,
        journal: Journal,
        run_id: int,
        *,
        seen_ids: Collection[str],
        control: ApplyControl,
    ) -> None:
        self.desired = desired
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self.seen_ids = seen_ids
        self.stop = control.stop
        self.on_start = control.on_start
        self.on_progress = control.on_progress
        self.before_archive = control.before_archive
        self.result = ApplyResult()

    async def run_phase(self, changes: list[Change], workers: int) -> None:
        unsent: list[Change] = []
        # Creates of one name run one after another: an ambiguous create re-lists by name and
        # must not mistake a sibling key's brand-new group for its own.
        units: dict[tuple[str, str], list[Change]] = {}
        for c in changes:
            if c.action is Action.ADOPT and not c.writes:
                unsent.append(c)
                continue
            unit = ("name", c.name) if c.action is Action.CREATE else ("key", c.key)
            units.setdefault(unit, []).append(c)
        for start in range(0, len(unsent), ADOPT_BATCH):
            self.adopt_unsent(unsent[start : start + ADOPT_BATCH])
            await asyncio.sleep(0)  # a signal or a deadline may stop the run between batches
        queue = iter(units.values())

        async def worker() -> None:
            for unit in queue:  # one shared iterator: each unit goes to exactly one worker
                for change in unit:
                    await self.apply_one(change)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(workers, len(units))):
                    tg.create_task(worker())
        except* JournalError as failed:  # nothing can be recorded, so nothing more is sent
            raise failed.exceptions[0] from None

    def adopt_unsent(self, changes: list[Change]) -> None:
        """Adoptions that send nothing, in one journal transaction (see the module docstring);
        each one heard of as if it had gone through `apply_one`."""
        if self.stop.requested.is_set():
            self.skip(changes)
            return
        adoptions = [(c, _unwritten_state(c, self.desired.get(c.key))) for c in changes]
        errors = self.journal.adopt_unsent(self.run_id, adoptions)
        for change, error in zip(changes, errors, strict=True):
            if self.on_start is not None:
                self.on_start(change)
            status = ChangeStatus.APPLIED if error is None else ChangeStatus.FAILED
            self.tally(change, status, error)

    def skip(self, changes: list[Change]) -> None:
        """Changes the stopped run does not start, journaled `skipped` in one transaction."""
        self.journal.skip_changes(self.run_id, changes, f"not started: {self.stop.reason}")
        for change in changes:
            self.tally(change, ChangeStatus.SKIPPED)

    async def apply_one(self, change: Change) -> None:
        if self.stop.requested.is_set():
            self.skip([change])
            return
        change_id = self.journal.begin_change(self.run_id, change)
        outcome = _Outcome(group_id=change.group_id)
        if self.on_start is not None:
            self.on_start(change)
        work = asyncio.ensure_future(self.execute(change, outcome))
        halt = asyncio.ensure_future(self.stop.at_once.wait())
        try:
            await asyncio.wait({work, halt}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the whole apply was cancelled from outside
            work.cancel()
            self.abandon(change, change_id, outcome, "the run was cancelled")
            raise
        finally:
            halt.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})  # let it unwind (closing its connection) before settling
        if work.cancelled():
            self.abandon(change, change_id, outcome, self.stop.reason)
            return
        status, error, http_status = _settled(change, work, outcome)
        self.settle(change, change_id, outcome, status, error=error, http_status=http_status)

    def abandon(self, change: Change, change_id: int, outcome: _Outcome, why: str) -> None:
        """A change left in flight: sent or about to be, its answer never seen."""
        note = f"abandoned in flight ({why}); the next plan re-reads the group"
        self.settle(
            change,
            change_id,
            outcome,
            ChangeStatus.UNKNOWN,
            http_status=outcome.http_status,
            note=note,
        )

    def settle(
        self,
        change: Change,
        change_id: int,
        outcome: _Outcome,
        status: ChangeStatus,
        *,
        error: str | None = None,
        http_status: int | None = None,
        note: str | None = None,
    ) -> None:
        notes = [*outcome.notes, note] if note else outcome.notes
        self.journal.settle_change(
            change_id,
            status=status,
            group_id=outcome.group_id,
            attempts=outcome.attempts,
            http_status=http_status,
            error=error,
            note="; ".join(notes) or None,
        )
        # A create's log line and metrics should name the group it made.
        settled = (
            change
            if outcome.group_id == change.group_id
            else replace(change, group_id=outcome.group_id)
        )
        self.tally(settled, status, error, outcome.group)

    def tally(
        self,
        change: Change,
        status: ChangeStatus,
        error: str | None = None,
        group: Group | None = None,
    ) -> None:
        """Count a journaled change in the result and tell `on_progress` how it ended."""
        if status is ChangeStatus.APPLIED:
            self.result.applied += 1
            if group is not None:
                self.result.groups[change.key] = group
        elif status is ChangeStatus.SKIPPED:
            self.result.skipped += 1
        elif status is ChangeStatus.UNKNOWN:
            self.result.unknown += 1
        else:
            self.result.failed += 1
            self.result.failures.append((change.key, error or status))
        if self.on_progress is not None:
            self.on_progress(change, status)

    async def write(self, outcome: _Outcome, call: Awaitable[T]) -> T:
        """One API write, its attempts and final status added to the change's record."""
        with call_trace() as trace:
            try:
                answer = await call
            finally:
                outcome.attempts += trace.attempts
                outcome.http_status = trace.status
        if isinstance(answer, Group):
            outcome.group = answer
        return answer

    async def execute(self, change: Change, outcome: _Outcome) -> None:
        key = change.key
        if change.action is Action.FORGET:
            self.journal.forget(key)
            return
        if change.action is Action.DELETE:
            assert change.group_id is not None
            try:
                await self.write(outcome, self.client.delete_group(change.group_id))
            except NotFound:
                outcome.notes.append("already gone")
            self.journal.forget(key)
            return
        if change.action is Action.CREATE:
            group = await self.create(change, outcome)
            outcome.group_id = group.id
            # Recorded at once: if the archive step fails or the process dies, the next plan
            # archives this group instead of creating another one.
            self.journal.set_managed(key, group.id, applied_state(group))
            if change.set_archived:
                try:
                    group = await self.put(change, group.id, {"archived": True}, outcome)
                except ApiError as exc:
                    raise _ChangeFailed(
                        f"created group {group.id} but could not archive it: {exc}",
                        http_status=exc.status,
                    ) from exc
                self.journal.set_managed(key, group.id, applied_state(group))
            return
        assert change.group_id is not None
        if change.set_archived and self.before_archive is not None:
            await self.before_archive(change)
        try:
            group = await self.put(change, change.group_id, _update_fields(change), outcome)
        except NotFound as exc:
            then = "recreates" if key in self.desired else "forgets"
            outcome.notes.append(f"the group vanished outside groupsync; the next plan {then} it")
            raise _ChangeFailed(str(exc), http_status=404) from exc
        self.journal.set_managed(key, group.id, applied_state(group))

    async def put(
        self, change: Change, group_id: str, body: dict[str, Any], outcome: _Outcome
    ) -> Group:
        """One PUT. If all its answers were lost it may still have committed: the group is read
        before the PUT is failed, so the journal records what the group really is."""
        try:
            return await self.write(outcome, self.client.update_group(group_id, **body))
        except ServerError as exc:
            try:
                group = await self.client.get_group(group_id)
            except ApiError:
                raise exc from None
            if not _shows(group, change):
                raise
        outcome.notes.append("no clear answer; re-reading the group shows the update applied")
        outcome.group = group
        return group

    async def create(self, change: Change, outcome: _Outcome) -> Group:
        """Create without ever making two groups for the key (see the module docstring)."""
        values = {f.field: f.new for f in change.fields if f.field != "name"}
        for attempt in (1, 2):
            try:
                return await self.write(
                    outcome,
                    self.client.create_group(
                        name=change.name, members=change.members or (), **values
                    ),
                )
            except AmbiguousWrite as exc:
                try:  # active groups only: ours is archived, if at all, after the create returns
                    groups = await self.client.list_groups(archived=False)
                except ApiError as list_exc:
                    raise _ChangeFailed(
                        f"create outcome unknown ({exc}) and re-listing failed ({list_exc}):"
                        " the next plan adopts the group by name if it was created",
                        http_status=exc.status,
                    ) from exc
                managed_ids = {mg.group_id for mg in self.journal.managed().values()}
                found = find_created(groups, change.name, self.seen_ids, managed_ids)
                if len(found) == 1:
                    outcome.notes.append("adopted after ambiguous create")
                    outcome.group = found[0]
                    return found[0]
                if found:
                    raise _ChangeFailed(
                        _several(change.name, found), http_status=exc.status
                    ) from exc
                if attempt == 2 or _may_still_be_running(exc):
                    raise _ChangeFailed(
                        f"create outcome unknown ({exc}); not sent again, so as not to make a"
                        " second group: the next plan adopts it by name if it appears",
                        http_status=exc.status,
                    ) from exc
                outcome.notes.append(f"ambiguous create ({exc.status}) made no group; sent again")
        raise AssertionError("unreachable: the loop returns or raises")


async def apply_plan(
    plan: Plan,
    desired: Mapping[str, DesiredGroup],
    client: Client,
    journal: Journal,
    run_id: int,
    *,
    seen_ids: Collection[str],
    control: ApplyControl | None = None,
    workers: int = DEFAULT_WORKERS,
) -> ApplyResult:
    """Apply the plan's changes, phase by phase; one change failing never stops the others.

    `seen_ids`: the id of every group the plan read. After an ambiguous create, a group with
    the name and an id outside them (and outside the journal's) is the one the create made.
    `control`: the run's stop and who hears of each change (by default no one, and no stop).
    `workers` caps the tasks (and so the `pending` rows) at a time; the client's own concurrency
    and rate limits decide what is really in flight.
    """
    if plan.refused:
        raise UnsafePlan(
            "refusing to apply a plan over the safety limits: " + "; ".join(plan.refusals)
        )
    control = control if control is not None else ApplyControl()
    applier = _Applier(desired, client, journal, run_id, seen_ids=seen_ids, control=control)
    errored = {e.key for e in plan.errors}
    phases: dict[int, list[Change]] = {}
    for change in plan.changes:
        if change.key in errored:
            applier.result.skipped += 1
            if control.on_progress is not None:
                control.on_progress(change, ChangeStatus.SKIPPED)
            continue
        phases.setdefault(change.phase, []).append(change)
    for phase in sorted(phases):
        journal.ensure_still_held()  # one writer: stop before a phase if the journal was replaced
        await applier.run_phase(phases[phase], max(1, workers))
    return applier.result


def _listed(group_id: str, groups: list[Group] | None) -> bool:
    return groups is not None and any(g.id == group_id for g in groups)


async def recover_pending(client: Client, journal: Journal) -> list[str]:
    """Settle the `pending` rows a crashed run left, before anything new is planned.

    A create is looked for (re-list, exact name, no key manages it) and adopted if exactly one
    such group exists: the crashed plan created only because no unmanaged group had the name,
    so one that has it now came from that POST, or is one the next plan would adopt by name
    anyway; adopting it here keeps a sibling key of the same name from claiming it too. No
    clock is compared (a server's may be hours off). A delete is checked; anything else is
    marked `interrupted` for the next plan to re-check against the API. Returns one line per
    row. It only reads the API, so a read-only client will do. Call it under the writer lock.
    """
    rows = journal.pending_changes()
    groups: list[Group] | None = None
    notes: list[str] = []
    for row in rows:
        key, action = row.key, row.action
        managed = journal.managed()
        if action == Action.CREATE and groups is None:
            groups = await client.list_all_groups()  # archived too: maybe after the archive step
        if action == Action.CREATE and key in managed and _listed(managed[key].group_id, groups):
            note = f"crashed after the create was recorded (group {managed[key].group_id})"
        elif action == Action.CREATE:
            assert groups is not None
            # A recreate of a vanished group still maps the key to the deleted id: replaced.
            managed_ids = {mg.group_id for mg in managed.values()}
            found = find_created(groups, row.name, managed_ids)
            if len(found) == 1:
                journal.set_managed(key, found[0].id, applied_state(found[0]))
                note = (
                    f"crashed mid-create; adopted group {found[0].id},"
                    " the one unmanaged group with its name"
                )
            elif found:
                note = "crashed mid-create; " + _several(row.name, found)
            else:
                note = "crashed mid-create; no group found, will be created by the next plan"
        elif action == Action.DELETE and row.group_id:
            try:
                await client.get_group(row.group_id)
                note = "crashed mid-delete; the group still exists, the next plan re-checks"
            except NotFound:
                if key in managed and managed[key].group_id == row.group_id:
                    journal.forget(key)
                note = "crashed mid-delete; the group is gone, key forgotten"
        else:
            note = "crashed; outcome unknown, the next plan re-checks"
        journal.settle_change(row.id, status=ChangeStatus.INTERRUPTED, note=note)
        notes.append(f"{key}: {note}")
    return notes
