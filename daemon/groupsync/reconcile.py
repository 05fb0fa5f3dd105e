"""One reconcile: read the account, plan, apply, journal. Shared by `plan`, `apply` and `run`.

The plan half holds a read-only client, so nothing before `execute` can write to the API
however it is called; only `execute` opens a client that may write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from groupsync.api import ApiError, AuthError, Client
from groupsync.apply import ApplyResult, apply_plan, recover_pending
from groupsync.config import Settings, policy_from
from groupsync.errors import EXIT_ERROR, EXIT_OK, EXIT_UNSAFE, GroupsyncError
from groupsync.gitspec import git_info
from groupsync.journal import Journal
from groupsync.models import Group
from groupsync.plan import Change, ManagedGroup, Plan, compute_plan, usernames_to_verify
from groupsync.secret import Secret
from groupsync.spec import Spec

log = logging.getLogger("groupsync.reconcile")


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan and what it was computed from, so a saved plan can be checked for staleness."""

    plan: Plan
    spec: Spec
    actual: dict[str, Group]  # by group id, as read
    contacts_read: bool


@dataclass(slots=True)
class RunReport:
    run_id: int | None
    outcome: str  # noop | applied | failed | refused | error | planned
    plan: Plan | None = None
    result: ApplyResult | None = None
    error: str | None = None
    duration_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.outcome == "refused":
            return EXIT_UNSAFE
        return EXIT_ERROR if self.outcome in ("failed", "error") else EXIT_OK

    def summary(self) -> str:
        parts = [f"outcome={self.outcome}"]
        parts += [f"{k}={v}" for k, v in sorted(self.counts.items()) if v]
        if self.error:
            parts.append(f"error={self.error}")
        return " ".join(parts)


def open_client(settings: Settings, token: Secret, *, read_only: bool) -> Client:
    api = settings.api
    return Client(
        api.base_url,
        token,
        timeout_s=api.timeout_s,
        max_concurrency=api.max_concurrency,
        max_requests_per_s=api.max_requests_per_s,
        read_only=read_only,
    )


def managed_state(journal: Journal | None) -> dict[str, ManagedGroup]:
    return journal.managed() if journal is not None else {}


async def make_plan(
    settings: Settings,
    spec: Spec,
    token: Secret,
    managed: dict[str, ManagedGroup],
    *,
    force: bool = False,
    allow_delete: bool = False,
) -> Planned:
    """Read the account with a read-only client and compute the plan.

    Contacts are listed only when the spec adds a username that no group shows yet: the cost
    model says a no-op reconcile costs the group list calls and nothing else.
    """
    policy = policy_from(settings, force=force, allow_delete=allow_delete)
    async with open_client(settings, token, read_only=True) as client:
        groups = await client.list_all_groups()
        unknown = usernames_to_verify(spec.groups, groups)
        known = None
        if unknown:
            known = frozenset(c.username for c in await client.list_contacts())
    plan = compute_plan(spec.groups, groups, managed, policy, known)
    return Planned(plan, spec, {g.id: g for g in groups}, known is not None)


async def execute(
    planned: Planned,
    settings: Settings,
    token: Secret,
    journal: Journal,
    run_id: int,
    *,
    on_progress: Callable[[Change, str], None] | None = None,
) -> ApplyResult:
    """Apply a confirmed plan with a client that may write; every change is journaled."""
    async with open_client(settings, token, read_only=False) as client:
        return await apply_plan(
            planned.plan, planned.spec.groups, client, journal, run_id, on_progress=on_progress
        )


async def recover(settings: Settings, token: Secret, journal: Journal) -> list[str]:
    """Settle `pending` rows a crashed run left, before anything new is planned."""
    if not journal.pending_changes():
        return []
    async with open_client(settings, token, read_only=False) as client:
        return await recover_pending(client, journal)


def _log_change(change: Change, status: str) -> None:
    log.info(
        "change %s %s key=%s group=%s cause=%s",
        status,
        change.action,
        change.key,
        change.group_id or "-",
        change.cause,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AuthError):
        return f"the eCampus API refused the token (HTTP 401): {exc.message}"
    return str(exc) or type(exc).__name__


def plan_counts(plan: Plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in plan.changes:
        counts[str(change.action)] = counts.get(str(change.action), 0) + 1
    counts["errors"] = len(plan.errors)
    return counts


async def reconcile(
    settings: Settings,
    spec: Spec,
    token: Secret,
    journal: Journal,
    *,
    trigger: str,
    apply: bool = True,
    force: bool = False,
    allow_delete: bool = False,
) -> RunReport:
    """One unattended reconcile. API and apply failures become the report's outcome, never raise."""
    started = time.monotonic()
    commit, dirty = git_info(settings.spec.path)
    run_id = journal.start_run(
        trigger=trigger,
        mode="apply" if apply else "plan",
        spec_digest=spec.digest,
        spec_commit=commit,
        spec_dirty=dirty,
    )
    report = RunReport(run_id=run_id, outcome="error")
    try:
        for note in await recover(settings, token, journal):
            log.warning("recovered: %s", note)
        planned = await make_plan(
            settings, spec, token, journal.managed(), force=force, allow_delete=allow_delete
        )
        report.plan = planned.plan
        report.counts = plan_counts(planned.plan)
        if planned.plan.refused:
            report.outcome = "refused"
            report.error = "; ".join(planned.plan.refusals)
        elif not apply:
            report.outcome = "planned"
        elif planned.plan.empty:
            report.outcome = "noop"
        else:
            result = await execute(
                planned, settings, token, journal, run_id, on_progress=_log_change
            )
            report.result = result
            report.counts |= {"applied": result.applied, "failed": result.failed}
            failed = result.failed or planned.plan.errors
            report.outcome = "failed" if failed else "applied"
            if failed:
                report.error = "; ".join(
                    [f"{key}: {msg}" for key, msg in result.failures]
                    + [f"{e.key}: {e.message}" for e in planned.plan.errors]
                )
    except (ApiError, GroupsyncError, OSError) as exc:
        report.outcome = "error"
        report.error = _describe(exc)
    finally:
        report.duration_s = time.monotonic() - started
        journal.finish_run(run_id, outcome=report.outcome, counts=report.counts, error=report.error)
    level = logging.INFO if report.exit_code == EXIT_OK else logging.ERROR
    log.log(level, "run %s %s in %.2fs", run_id, report.summary(), report.duration_s)
    return report
