"""One reconcile: read the account, plan, apply, journal. Shared by `plan`, `apply` and `run`.

A `Session` holds what every run against one account shares (settings, token, journal); a run's
own knobs come in `RunOptions`. Reading and planning use a read-only client, so nothing before
the apply step can write to the API however it is called: `_Run.apply` is the one place that
opens a client that may write. A run ends early, truthfully journaled as `interrupted`, when
its `RunStop` is asked to (a signal) or its deadline passes (groupsync.deadline).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from groupsync.api import AuthError, Client, ClientStats, Limits, NotFound
from groupsync.apply import ApplyControl, ApplyResult, apply_plan, recover_pending
from groupsync.config import Settings, policy_from
from groupsync.deadline import RunDeadline
from groupsync.errors import GroupsyncError
from groupsync.gitspec import Source, git_info
from groupsync.journal import Journal, JournalError
from groupsync.logs import RUN_LOGGER
from groupsync.models import Group
from groupsync.outbox import Courier
from groupsync.outcomes import ChangeStatus, ExitCode, Failure, RunOutcome
from groupsync.plan import (
    Change,
    ManagedGroup,
    Plan,
    Policy,
    RosterCounts,
    compute_key_plan,
    compute_plan,
    narrow_keys,
    usernames_to_verify,
    with_messages,
)
from groupsync.runsummary import RunFacts, due, post_summary
from groupsync.secret import Secret
from groupsync.spec import Spec
from groupsync.state import NO_STATE, State, read_state
from groupsync.stopping import Interrupted, RunStop

log = logging.getLogger("groupsync.reconcile")
run_log = logging.getLogger(RUN_LOGGER)


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan and what it was computed from, so a saved plan can be checked for staleness."""

    plan: Plan
    spec: Spec
    actual: dict[str, Group]  # by group id, as read
    state: State = NO_STATE  # the managed groups the plan read, and where from
    deferred: frozenset[str] = frozenset()  # keys asked for that only a full plan can plan


@dataclass(slots=True)
class RunReport:
    run_id: int | None
    outcome: RunOutcome
    plan: Plan | None = None
    result: ApplyResult | None = None
    error: str | None = None
    failure: Failure | None = None  # why an `error` run failed, for the daemon to act on
    deferred: frozenset[str] = frozenset()  # keys of a run of some keys that need a full run
    duration_s: float = 0.0  # time the run worked: a wait at the confirmation prompt not counted
    counts: dict[str, int] = field(default_factory=dict)
    api: ClientStats = field(default_factory=ClientStats)  # every request of the run

    @property
    def exit_code(self) -> ExitCode:
        return self.outcome.exit_code

    def summary(self) -> str:
        parts = [f"outcome={self.outcome}"]
        parts += [f"{k}={v}" for k, v in sorted(self.counts.items()) if v]
        if self.error:
            parts.append(f"error={self.error}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """One run's knobs; the defaults suit an unattended run.

    `show` sees every plan (refused ones too, so the reviewer sees why); `approve` is asked only
    when there is something to apply and may refuse it (outcome `declined`), raise Interrupted
    (outcome `interrupted`), or raise to stop it. `on_start` and `on_progress` hear of each
    change (see ApplyControl). `spec_source` is the (commit, dirty) the spec was loaded at; by
    default, the tree's now. `stop` lets a signal handler end the run early (see
    groupsync.stopping); `deadline_s` replaces the computed deadline (groupsync.deadline).
    `keys` plans only those keys, each group read by id (`plan_keys`: a webhook's repair).
    """

    trigger: str = "manual"
    force: bool = False
    allow_delete: bool = False
    show: Callable[[Planned], None] | None = None
    approve: Callable[[Planned], bool] | None = None
    on_start: Callable[[Change], None] | None = None
    on_progress: Callable[[Change, ChangeStatus], None] | None = None
    spec_source: Source | None = None
    stop: RunStop | None = None
    deadline_s: float | None = None
    keys: frozenset[str] | None = None


class Session:
    """Settings, token and journal: what every run against one account shares.

    Without a journal a session reads and plans only, taking the managed groups from `state` (a
    snapshot of the daemon's journal) if given, else from the journal file if there is one: a
    dry run must not create a journal (CI plans on pull requests have none).
    """

    def __init__(
        self,
        settings: Settings,
        token: Secret,
        journal: Journal | None = None,
        *,
        state: State | None = None,
    ) -> None:
        if journal is not None and state is not None:
            raise TypeError("a session plans from its journal or from a snapshot, not both")
        self.settings = settings
        self.token = token
        self.journal = journal
        self._state = state

    def reader(self, stats: ClientStats | None = None) -> Client:
        """A client that cannot write, for reading the account."""
        return self._client(read_only=True, stats=stats)

    def _client(self, *, read_only: bool, stats: ClientStats | None) -> Client:
        api = self.settings.api
        limits = Limits(
            timeout_s=api.timeout_s,
            max_concurrency=api.max_concurrency,
            max_requests_per_s=api.max_requests_per_s,
        )
        return Client(api.base_url, self.token, limits=limits, read_only=read_only, stats=stats)

    def state(self) -> State:
        """What the plan reads from the journal: the session's snapshot, else its journal, else
        the journal file if there is one; no journal yet (or no folder for it) is no state."""
        if self._state is not None:
            return self._state
        if self.journal is not None:
            return read_state(self.journal)
        path = self.settings.journal.path
        if not path.exists():
            return NO_STATE
        with Journal.open(path) as journal:
            return read_state(journal)

    async def plan(
        self,
        spec: Spec,
        options: RunOptions | None = None,
        *,
        stats: ClientStats | None = None,
        commit: str | None = None,
    ) -> Planned:
        """Read the account with a read-only client and compute the plan (`force` and
        `allow_delete` come from `options`; `commit`, the spec's, for the messages)."""
        options = options or RunOptions()
        policy = policy_from(self.settings, force=options.force, allow_delete=options.allow_delete)
        state = self.state()
        async with self.reader(stats) as client:
            if options.keys is not None:
                planned = await plan_keys(
                    client,
                    spec,
                    options.keys,
                    state.managed,
                    policy=policy,
                    last_rosters=state.rosters,
                    commit=commit,
                )
            else:
                planned = await plan_with(
                    client, spec, state.managed, policy, state.rosters, commit=commit
                )
        return replace(planned, state=state)

    async def reconcile(self, spec: Spec, options: RunOptions | None = None) -> RunReport:
        """One journaled run. API and apply failures become the report's outcome, never raise;
        a journal that cannot record the run raises its JournalError."""
        if self.journal is None:
            raise TypeError("a session without a journal only plans")
        return await _Run(self, self.journal, spec, options or RunOptions()).go()


def roster_counts(spec: Spec) -> dict[str, RosterCounts]:
    return {r.name: RosterCounts(r.groups, r.members) for r in spec.rosters}


async def plan_with(
    client: Client,
    spec: Spec,
    managed: Mapping[str, ManagedGroup],
    policy: Policy,
    last_rosters: Mapping[str, RosterCounts] | None = None,
    *,
    commit: str | None = None,
) -> Planned:
    """The plan for the account as `client` reads it.

    `last_rosters`: what the spec's rosters yielded at the last applied run (the journal's),
    for the roster safety check. `commit`: the spec's, for the messages' `{commit}`.

    Contacts are listed only when the spec adds a username that no group shows yet: the cost
    model says a no-op reconcile costs the group list calls and nothing else.
    """
    groups = await client.list_all_groups()
    groups += await _confirm_vanished(client, groups, managed)
    known = None
    if usernames_to_verify(spec.groups, groups):
        known = frozenset(c.username for c in await client.list_contacts())
    plan = compute_plan(
        spec.groups,
        groups,
        managed,
        policy,
        known,
        rosters=roster_counts(spec),
        last_rosters=last_rosters,
    )
    plan = with_messages(plan, spec.groups, groups, managed, notify=spec.notify, commit=commit)
    return Planned(plan, spec, {g.id: g for g in groups})


async def plan_keys(
    client: Client,
    spec: Spec,
    keys: frozenset[str],
    managed: Mapping[str, ManagedGroup],
    *,
    policy: Policy,
    last_rosters: Mapping[str, RosterCounts] | None = None,
    commit: str | None = None,
) -> Planned:
    """The plan for `keys` alone, each managed group read by id: one GET a key, no list.

    A key whose group is gone, that the spec dropped or whose pin moves it needs the account's
    lists (adoption by name, a move): it is left out and named in `deferred`. The contacts are
    listed only for a desired username that neither the group nor its last applied state shows.
    """
    wanted = sorted(k for k in keys if k in managed)
    found = await asyncio.gather(*(_get_or_none(client, managed[k].group_id) for k in wanted))
    fetched = {g.id: g for g in found if g is not None}
    ok, deferred = narrow_keys(spec.groups, keys, fetched, managed)
    unseen: set[str] = set()
    for key in ok:
        members = spec.groups[key].members
        applied = managed[key].applied
        if members:
            shown = fetched[managed[key].group_id].members
            unseen |= members - shown - ((applied.members or frozenset()) if applied else set())
    known = frozenset(c.username for c in await client.list_contacts()) if unseen else None
    plan = compute_key_plan(
        spec.groups,
        ok,
        fetched.values(),
        managed,
        policy=policy,
        known_usernames=known,
        rosters=roster_counts(spec),
        last_rosters=last_rosters,
    )
    read = list(fetched.values())
    plan = with_messages(plan, spec.groups, read, managed, notify=spec.notify, commit=commit)
    return Planned(plan, spec, fetched, deferred)


async def _get_or_none(client: Client, group_id: str) -> Group | None:
    try:
        return await client.get_group(group_id)
    except NotFound:
        return None


async def _confirm_vanished(
    client: Client, groups: list[Group], managed: Mapping[str, ManagedGroup]
) -> list[Group]:
    """Managed groups missing from both lists, if they still exist after all.

    Active and archived groups are two lists read one after the other; a group restored or
    archived between the reads is in neither. The plan would recreate it as "deleted out of
    band", so each missing id is checked directly (GET works for archived groups too) before
    anything is believed gone. Costs one GET per missing group, nothing when none is missing.
    """
    seen = {g.id for g in groups}
    found = []
    for group_id in sorted({mg.group_id for mg in managed.values()} - seen):
        try:
            found.append(await client.get_group(group_id))
        except NotFound:
            continue
    return found


def _describe(exc: BaseException) -> tuple[Failure, str]:
    if isinstance(exc, AuthError):
        return Failure.AUTH, f"the eCampus API refused the token (HTTP 401): {exc.message}"
    kind = Failure.JOURNAL if isinstance(exc, (JournalError, OSError)) else Failure.API
    return kind, str(exc) or type(exc).__name__


class _Run:
    """One run of a session: recover, plan, show, approve, apply, journal, report."""

    def __init__(self, session: Session, journal: Journal, spec: Spec, options: RunOptions) -> None:
        self.session = session
        self.journal = journal
        self.spec = spec
        self.options = options
        self.stop = options.stop if options.stop is not None else RunStop()
        self.report = RunReport(run_id=None, outcome=RunOutcome.ERROR)
        self.deadline = RunDeadline(
            session.settings.api, self.report.api, fixed_s=options.deadline_s
        )
        self.commit: str | None = None

    async def go(self) -> RunReport:
        report, source = self.report, self.options.spec_source
        commit, dirty = source if source is not None else git_info(self.session.settings.spec.path)
        self.commit = commit
        self.journal.ensure_still_held()  # one writer: a replaced journal is never written to
        run_id = report.run_id = self.journal.start_run(
            trigger=self.options.trigger,
            mode="apply",
            spec_digest=self.spec.digest,
            spec_commit=commit,
            spec_dirty=dirty,
            rosters=[r.to_json() for r in self.spec.rosters],
        )
        watch = asyncio.ensure_future(self.deadline.watch(self.stop))
        try:
            await self.plan_and_settle()
        except Interrupted as exc:
            report.outcome, report.error = RunOutcome.INTERRUPTED, str(exc)
        except asyncio.CancelledError:
            report.outcome, report.error = RunOutcome.INTERRUPTED, "stopped before the run finished"
            raise
        except (GroupsyncError, OSError) as exc:
            report.failure, report.error = _describe(exc)
        except BaseException as exc:  # a bug: the run row still says so
            report.failure, report.error = Failure.BUG, f"unexpected: {exc!r}"
            raise
        finally:
            watch.cancel()
            report.duration_s = self.deadline.elapsed_s()
            self.journal.finish_run(
                run_id,
                outcome=report.outcome,
                counts=report.counts,
                error=report.error,
                plan_checksum=report.plan.checksum if report.plan else None,
            )
            level = logging.INFO if report.exit_code == ExitCode.OK else logging.ERROR
            run_log.log(
                level, "run %s %s (took %.2fs)", run_id, report.summary(), report.duration_s
            )
        await self.notify_admins()
        return report

    async def notify_admins(self) -> None:
        """The run summary for `notify.admin_group`, if this run calls for one (see
        groupsync.runsummary); it never fails the run."""
        admin, report = self.spec.notify.admin_group, self.report
        if admin is None or self.stop.requested.is_set() or report.run_id is None:
            return
        facts = RunFacts(
            report.run_id, report.outcome, report.plan, report.result, report.error, self.commit
        )
        try:
            todo = due(self.journal, admin, facts)
            if todo:
                async with self.session._client(read_only=False, stats=report.api) as client:
                    await post_summary(client, self.journal, admin, facts, todo)
        except (GroupsyncError, OSError) as exc:
            log.warning("run summary not posted: %s", exc)

    async def plan_and_settle(self) -> None:
        session, report = self.session, self.report
        for note in await self.stop.guard(self.recover()):
            log.warning("recovered: %s", note)
        planned = await self.stop.guard(
            session.plan(self.spec, self.options, stats=report.api, commit=self.commit)
        )
        report.plan = planned.plan
        report.counts = planned.plan.counts
        report.deferred = planned.deferred
        if self.options.show is not None:
            self.options.show(planned)
        await self.settle(planned)

    async def recover(self) -> list[str]:
        """Settle `pending` rows a crashed run left, before anything new is planned."""
        if self.journal.recover_messages():
            log.warning("recovered: messages a crashed run was posting are unknown, never resent")
        if not self.journal.pending_changes():
            return []
        async with self.session.reader(self.report.api) as client:
            return await recover_pending(client, self.journal)

    async def settle(self, planned: Planned) -> None:
        plan, report = planned.plan, self.report
        if plan.refused:
            report.outcome, report.error = RunOutcome.REFUSED, "; ".join(plan.refusals)
            return
        if plan.changes and self.options.approve is not None:
            with self.deadline.paused():
                approved = self.options.approve(planned)
            if not approved:
                report.outcome = RunOutcome.DECLINED
                return
        result = await self.apply(planned) if plan.changes else None
        problems = [f"{key}: {msg}" for key, msg in (result.failures if result else [])]
        problems += [f"{e.key}: {e.message}" for e in plan.errors]
        if self.stop.requested.is_set():
            assert result is not None
            stopped = (
                f"{self.stop.reason}: {result.skipped} change(s) not started,"
                f" {result.unknown} abandoned in flight"
            )
            report.outcome, report.error = RunOutcome.INTERRUPTED, "; ".join([stopped, *problems])
        elif problems:
            report.outcome, report.error = RunOutcome.FAILED, "; ".join(problems)
        else:
            report.outcome = RunOutcome.APPLIED if plan.changes else RunOutcome.NOOP

    async def apply(self, planned: Planned) -> ApplyResult:
        """Apply a confirmed plan, every change journaled: the one client that may write. The
        plan's messages go out through the same client (groupsync.outbox), archive notices
        before their archive and the others after their change applied."""
        if self.stop.requested.is_set():  # a signal that came while the plan was shown
            raise Interrupted(f"{self.stop.reason} before anything was applied")
        report, options = self.report, self.options
        self.deadline.changes = len(planned.plan.changes)
        async with self.session._client(read_only=False, stats=report.api) as client:
            run_id, messages = report.run_id or 0, planned.plan.messages
            courier = Courier(client, self.journal, run_id, messages, stop=self.stop)
            control = ApplyControl(
                self.stop, options.on_start, options.on_progress, before_archive=courier.before
            )
            result = await apply_plan(
                planned.plan,
                planned.spec.groups,
                client,
                self.journal,
                report.run_id or 0,
                seen_ids=planned.actual.keys(),
                control=control,
                workers=self.session.settings.api.max_concurrency,
            )
            await courier.after(result.groups, self.session.settings.api.max_concurrency)
        report.result = result
        report.counts |= {
            "applied": result.applied,
            "failed": result.failed,
            "skipped": result.skipped,
            "unknown": result.unknown,
        }
        return result
