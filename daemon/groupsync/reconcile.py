"""One reconcile: read the account, plan, apply, journal. Shared by `plan`, `apply` and `run`.

The plan half holds a read-only client, so nothing before `execute` can write to the API
however it is called; only `execute` opens a client that may write. A run ends early, truthfully
journaled as `interrupted`, when its `RunStop` is asked to (a signal) or its deadline passes
(groupsync.deadline).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from groupsync.api import AuthError, Client, ClientStats, NotFound
from groupsync.apply import ApplyResult, apply_plan, recover_pending
from groupsync.config import Settings, policy_from
from groupsync.deadline import RunDeadline
from groupsync.errors import GroupsyncError
from groupsync.gitspec import git_info
from groupsync.journal import Journal, JournalError
from groupsync.models import Group
from groupsync.outcomes import ChangeStatus, ExitCode, Failure, RunOutcome
from groupsync.plan import (
    Change,
    ManagedGroup,
    Plan,
    RosterCounts,
    compute_plan,
    usernames_to_verify,
)
from groupsync.secret import Secret
from groupsync.spec import Spec
from groupsync.stopping import Interrupted, RunStop

log = logging.getLogger("groupsync.reconcile")


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan and what it was computed from, so a saved plan can be checked for staleness."""

    plan: Plan
    spec: Spec
    actual: dict[str, Group]  # by group id, as read


@dataclass(slots=True)
class RunReport:
    run_id: int | None
    outcome: RunOutcome
    plan: Plan | None = None
    result: ApplyResult | None = None
    error: str | None = None
    failure: Failure | None = None  # why an `error` run failed, for the daemon to act on
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


def open_client(
    settings: Settings, token: Secret, *, read_only: bool, stats: ClientStats | None = None
) -> Client:
    api = settings.api
    return Client(
        api.base_url,
        token,
        timeout_s=api.timeout_s,
        max_concurrency=api.max_concurrency,
        max_requests_per_s=api.max_requests_per_s,
        read_only=read_only,
        stats=stats,
    )


def managed_state(journal_path: Path) -> dict[str, ManagedGroup]:
    """The journal's key -> group map for a dry run; no journal yet means nothing is managed.

    A dry run must not create a journal (CI plans on pull requests have none).
    """
    if not journal_path.exists():
        return {}
    with Journal.open(journal_path) as journal:
        return journal.managed()


def last_roster_counts(journal_path: Path) -> dict[str, RosterCounts]:
    """The journal's roster yields at the last applied run, for a dry run (see managed_state)."""
    if not journal_path.exists():
        return {}
    with Journal.open(journal_path) as journal:
        return journal.last_roster_counts()


def roster_counts(spec: Spec) -> dict[str, RosterCounts]:
    return {r.name: RosterCounts(r.groups, r.members) for r in spec.rosters}


async def make_plan(
    settings: Settings,
    spec: Spec,
    token: Secret,
    managed: dict[str, ManagedGroup],
    *,
    force: bool = False,
    allow_delete: bool = False,
    stats: ClientStats | None = None,
    last_rosters: Mapping[str, RosterCounts] | None = None,
) -> Planned:
    """Read the account with a read-only client and compute the plan.

    `last_rosters`: what the spec's rosters yielded at the last applied run (the journal's),
    for the roster safety check.

    Contacts are listed only when the spec adds a username that no group shows yet: the cost
    model says a no-op reconcile costs the group list calls and nothing else.
    """
    policy = policy_from(settings, force=force, allow_delete=allow_delete)
    async with open_client(settings, token, read_only=True, stats=stats) as client:
        groups = await client.list_all_groups()
        groups += await _confirm_vanished(client, groups, managed)
        unknown = usernames_to_verify(spec.groups, groups)
        known = None
        if unknown:
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
    return Planned(plan, spec, {g.id: g for g in groups})


async def _confirm_vanished(
    client: Client, groups: list[Group], managed: dict[str, ManagedGroup]
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


async def execute(
    planned: Planned,
    settings: Settings,
    token: Secret,
    journal: Journal,
    run_id: int,
    *,
    stop: RunStop | None = None,
    on_start: Callable[[Change], None] | None = None,
    on_progress: Callable[[Change, ChangeStatus], None] | None = None,
    stats: ClientStats | None = None,
) -> ApplyResult:
    """Apply a confirmed plan with a client that may write; every change is journaled."""
    async with open_client(settings, token, read_only=False, stats=stats) as client:
        return await apply_plan(
            planned.plan,
            planned.spec.groups,
            client,
            journal,
            run_id,
            seen_ids=planned.actual.keys(),
            stop=stop,
            on_start=on_start,
            on_progress=on_progress,
            workers=settings.api.max_concurrency,
        )


async def recover(
    settings: Settings, token: Secret, journal: Journal, stats: ClientStats | None = None
) -> list[str]:
    """Settle `pending` rows a crashed run left, before anything new is planned."""
    if not journal.pending_changes():
        return []
    async with open_client(settings, token, read_only=True, stats=stats) as client:
        return await recover_pending(client, journal)


def _describe(exc: BaseException) -> tuple[Failure, str]:
    if isinstance(exc, AuthError):
        return Failure.AUTH, f"the eCampus API refused the token (HTTP 401): {exc.message}"
    kind = Failure.JOURNAL if isinstance(exc, (JournalError, OSError)) else Failure.API
    return kind, str(exc) or type(exc).__name__


async def reconcile(
    settings: Settings,
    spec: Spec,
    token: Secret,
    journal: Journal,
    *,
    trigger: str,
    force: bool = False,
    allow_delete: bool = False,
    show: Callable[[Planned], None] | None = None,
    approve: Callable[[Planned], bool] | None = None,
    on_start: Callable[[Change], None] | None = None,
    on_progress: Callable[[Change, ChangeStatus], None] | None = None,
    spec_source: tuple[str | None, bool | None] | None = None,
    stop: RunStop | None = None,
    deadline_s: float | None = None,
) -> RunReport:
    """One journaled run. API and apply failures become the report's outcome, never raise.

    `show` sees every plan (refused ones too, so the reviewer sees why); `approve` is asked only
    when there is something to apply and may refuse it (outcome `declined`), raise Interrupted
    (outcome `interrupted`), or raise to stop it. `spec_source` is the (commit, dirty) the spec
    was loaded at; by default, the tree's now. `stop` lets a signal handler end the run early
    (see groupsync.stopping); `deadline_s` replaces the computed deadline (groupsync.deadline).
    """
    stop = stop if stop is not None else RunStop()
    commit, dirty = spec_source if spec_source is not None else git_info(settings.spec.path)
    journal.ensure_still_held()  # one writer: a replaced journal is never written to
    run_id = journal.start_run(
        trigger=trigger,
        mode="apply",
        spec_digest=spec.digest,
        spec_commit=commit,
        spec_dirty=dirty,
        rosters=[r.to_json() for r in spec.rosters],
    )
    report = RunReport(run_id=run_id, outcome=RunOutcome.ERROR)
    deadline = RunDeadline(settings.api, report.api, fixed_s=deadline_s)
    watch = asyncio.ensure_future(deadline.watch(stop))
    try:
        for note in await stop.guard(recover(settings, token, journal, report.api)):
            log.warning("recovered: %s", note)
        planned = await stop.guard(
            make_plan(
                settings,
                spec,
                token,
                journal.managed(),
                force=force,
                allow_delete=allow_delete,
                stats=report.api,
                last_rosters=journal.last_roster_counts(),
            )
        )
        report.plan = planned.plan
        report.counts = planned.plan.counts
        if show is not None:
            show(planned)
        run = _Run(settings, token, journal, stop, deadline, on_start, on_progress)
        await run.settle_plan(planned, report, approve)
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
        report.duration_s = deadline.elapsed_s()
        journal.finish_run(
            run_id,
            outcome=report.outcome,
            counts=report.counts,
            error=report.error,
            plan_checksum=report.plan.checksum if report.plan else None,
        )
        level = logging.INFO if report.exit_code == ExitCode.OK else logging.ERROR
        log.log(level, "run %s %s (took %.2fs)", run_id, report.summary(), report.duration_s)
    return report


@dataclass(slots=True)
class _Run:
    """What applying a plan needs, beyond the plan."""

    settings: Settings
    token: Secret
    journal: Journal
    stop: RunStop
    deadline: RunDeadline
    on_start: Callable[[Change], None] | None
    on_progress: Callable[[Change, ChangeStatus], None] | None

    async def settle_plan(
        self, planned: Planned, report: RunReport, approve: Callable[[Planned], bool] | None
    ) -> None:
        plan = planned.plan
        if plan.refused:
            report.outcome, report.error = RunOutcome.REFUSED, "; ".join(plan.refusals)
            return
        if plan.changes and approve is not None:
            with self.deadline.paused():
                approved = approve(planned)
            if not approved:
                report.outcome = RunOutcome.DECLINED
                return
        result = None
        if plan.changes:
            if self.stop.requested.is_set():  # a signal that came while the plan was shown
                raise Interrupted(f"{self.stop.reason} before anything was applied")
            self.deadline.changes = len(plan.changes)
            result = await execute(
                planned,
                self.settings,
                self.token,
                self.journal,
                report.run_id or 0,
                stop=self.stop,
                on_start=self.on_start,
                on_progress=self.on_progress,
                stats=report.api,
            )
            report.result = result
            report.counts |= {
                "applied": result.applied,
                "failed": result.failed,
                "skipped": result.skipped,
                "unknown": result.unknown,
            }
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
