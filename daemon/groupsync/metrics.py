"""Prometheus metrics and the health /healthz reports, for the daemon's HTTP service.

The service reads them from its own thread (groupsync.httpservice): everything a scrape reads is
either a prometheus-client metric (thread-safe) or one tuple swapped atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from groupsync.api import ClientStats
from groupsync.outcomes import ChangeStatus, RunOutcome
from groupsync.plan import Cause, Change, Plan

SUCCESS = frozenset({"noop", "applied"})

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))

# Every metric the daemon exposes, and the help line /metrics shows for it.
_HELP = {
    "groupsync_runs": "Reconcile runs, by outcome.",
    "groupsync_run_duration_seconds": "Wall time of one reconcile.",
    "groupsync_changes": "Changes settled, by action and outcome (applied, failed, skipped, ...).",
    "groupsync_last_success_timestamp_seconds": (
        "Unix time the last successful run (noop or applied) finished."
    ),
    "groupsync_drifted_groups": "Groups the last plan found changed outside groupsync.",
    "groupsync_api_requests": (
        "eCampus API requests sent (retries included), by method and HTTP status."
    ),
    "groupsync_consecutive_errors": (
        "Runs in a row that could not reach or use the API (drives the backoff)."
    ),
    "groupsync_journal_writer": (
        "1 while this daemon holds its journal and the journal's lock (it is the one writer)."
    ),
    "groupsync_run_in_flight_seconds": "How long the run in flight has been going; 0 when none is.",
    "groupsync_webhook_events": (
        "Webhook events received, by type and outcome (repaired, noop, duplicate, unmanaged,"
        " rejected, error)."
    ),
    "groupsync_webhook_repair_seconds": (
        "Time from a webhook event's receipt to its group's repair (or the finding that none"
        " was needed)."
    ),
    "groupsync_webhook_queue_depth": "Groups waiting for a webhook repair.",
}
_REPAIR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, float("inf"))


@dataclass(frozen=True, slots=True)
class Health:
    outcome: RunOutcome | None  # None until the first run finishes
    finished_at: float  # time.time() of the last finished run
    summary: str


def drifted_keys(plan: Plan) -> set[str]:
    """Keys with any change caused by someone editing the group outside groupsync."""
    return {
        c.key
        for c in plan.changes
        if c.cause == Cause.DRIFT
        or c.members_cause == Cause.DRIFT
        or any(f.cause == Cause.DRIFT for f in c.fields)
    }


class Metrics:
    """The daemon's metrics, in a registry of its own so that tests can run several daemons."""

    def __init__(self, *, max_age_s: float, registry: CollectorRegistry | None = None) -> None:
        self.max_age_s = max_age_s
        self.registry = registry or CollectorRegistry()
        self.runs = self._counter("groupsync_runs", "outcome")
        self.run_duration = Histogram(
            "groupsync_run_duration_seconds",
            _HELP["groupsync_run_duration_seconds"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.changes = self._counter("groupsync_changes", "action", "outcome")
        self.last_success = self._gauge("groupsync_last_success_timestamp_seconds")
        self.drifted = self._gauge("groupsync_drifted_groups")
        self.api_requests = self._counter("groupsync_api_requests", "method", "status")
        self.consecutive_errors = self._gauge("groupsync_consecutive_errors")
        self.journal_writer = self._gauge("groupsync_journal_writer")
        self.run_in_flight = self._gauge("groupsync_run_in_flight_seconds")
        self.webhook_events = self._counter("groupsync_webhook_events", "type", "outcome")
        self.webhook_repair = Histogram(
            "groupsync_webhook_repair_seconds",
            _HELP["groupsync_webhook_repair_seconds"],
            buckets=_REPAIR_BUCKETS,
            registry=self.registry,
        )
        self.webhook_queue = self._gauge("groupsync_webhook_queue_depth")
        self._health = Health(None, 0.0, "starting")
        # Conditions that make the daemon unhealthy whatever its last run did (a lost journal,
        # a run that does not finish); each says why, or None. Read from the server's thread.
        self.checks: list[Callable[[], str | None]] = []

    def _counter(self, name: str, *labels: str) -> Counter:
        return Counter(name, _HELP[name], labels, registry=self.registry)

    def _gauge(self, name: str) -> Gauge:
        return Gauge(name, _HELP[name], registry=self.registry)

    def observe_run(
        self, outcome: RunOutcome, duration_s: float, plan: Plan | None, summary: str
    ) -> None:
        """Record one finished reconcile; called from the event loop."""
        self.runs.labels(outcome).inc()
        self.run_duration.observe(duration_s)
        if plan is not None:
            self.drifted.set(len(drifted_keys(plan)))
        now = time.time()
        if outcome in SUCCESS:
            self.last_success.set(now)
        self._health = Health(outcome, now, summary)

    def observe_change(self, change: Change, status: ChangeStatus) -> None:
        """Fit for reconcile's `on_progress`: each change as it settles (applied, failed, ...)."""
        self.changes.labels(str(change.action), status).inc()

    def observe_requests(self, stats: ClientStats) -> None:
        """Add one run's API requests (the run's clients share one ClientStats)."""
        for (method, status), n in stats.by_method_status.items():
            self.api_requests.labels(method, status).inc(n)

    def problem(self) -> str | None:
        """What makes the daemon unhealthy whatever its last run did (a lost journal), or None."""
        for check in self.checks:
            problem = check()
            if problem:
                return problem
        return None

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """Healthy while no check objects, and the last run succeeded less than max_age_s ago."""
        problem = self.problem()
        if problem:
            return False, problem
        h = self._health
        now = time.time() if now is None else now
        if h.outcome is None:
            return False, "no run finished yet"
        age = now - h.finished_at
        if h.outcome not in SUCCESS:
            return False, f"last run {h.outcome} {age:.0f}s ago: {h.summary}"
        if age > self.max_age_s:
            return False, f"last run finished {age:.0f}s ago (limit {self.max_age_s:.0f}s)"
        return True, f"last run {h.outcome} {age:.0f}s ago: {h.summary}"
