"""Metrics and /healthz over real HTTP on 127.0.0.1 (the daemon's HTTP service), parsed with
prometheus-client's parser."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import open_service
from groupsync.api import ClientStats
from groupsync.errors import GroupsyncError
from groupsync.metrics import Metrics
from groupsync.plan import Action, Cause, Change, FieldChange, Plan


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics(max_age_s=60)
    service = open_service(metrics)
    port = service.start("127.0.0.1:0")
    yield metrics, f"http://127.0.0.1:{port}"
    service.close()


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{base}/metrics", timeout=5, verify=False)
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


PLAN = Plan(
    changes=(
        Change(key="chess", action=Action.CREATE, cause=Cause.SPEC, name="Chess"),
        Change(
            key="go",
            action=Action.UPDATE,
            cause=Cause.DRIFT,
            name="Go",
            group_id="g1",
            fields=(FieldChange("name", "Goo", "Go", Cause.DRIFT),),
        ),
        Change(
            key="cs101",
            action=Action.UPDATE,
            cause=Cause.SPEC,
            name="CS",
            group_id="g2",
            members_add=("ada",),
            members_cause=Cause.DRIFT,
        ),
    )
)


def test_runs_changes_drift_and_last_success_are_exposed(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    for change, status in zip(PLAN.changes, ["applied", "failed", "applied"], strict=True):
        metrics.observe_change(change, status)
    metrics.observe_run("failed", 1.5, PLAN, "outcome=failed create=1 update=2")
    metrics.observe_run("error", 0.2, None, "outcome=error")
    s = samples(base)
    assert s[("groupsync_runs_total", (("outcome", "failed"),))] == 1
    assert s[("groupsync_runs_total", (("outcome", "error"),))] == 1
    assert s[("groupsync_run_duration_seconds_count", ())] == 2
    assert s[("groupsync_run_duration_seconds_sum", ())] == pytest.approx(1.7)
    assert s[("groupsync_changes_total", (("action", "create"), ("outcome", "applied")))] == 1
    assert s[("groupsync_changes_total", (("action", "update"), ("outcome", "failed")))] == 1
    assert s[("groupsync_changes_total", (("action", "update"), ("outcome", "applied")))] == 1
    assert s[("groupsync_drifted_groups", ())] == 2
    # Neither run succeeded.
    assert s[("groupsync_last_success_timestamp_seconds", ())] == 0
    metrics.observe_run("applied", 0.1, None, "outcome=applied")
    s = samples(base)
    assert time.time() - s[("groupsync_last_success_timestamp_seconds", ())] < 60


def test_healthz_follows_the_last_run(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    r = httpx.get(f"{base}/healthz", timeout=5, verify=False)
    assert r.status_code == 503 and "no run" in r.text
    metrics.observe_run("noop", 0.1, Plan(changes=()), "outcome=noop")
    r = httpx.get(f"{base}/healthz", timeout=5, verify=False)
    assert r.status_code == 200, r.text
    metrics.observe_run("error", 0.1, None, "outcome=error error=refused the token")
    r = httpx.get(f"{base}/healthz", timeout=5, verify=False)
    assert r.status_code == 503 and "refused the token" in r.text
    assert httpx.get(f"{base}/nope", timeout=5, verify=False).status_code == 404


def test_a_success_too_long_ago_is_unhealthy() -> None:
    metrics = Metrics(max_age_s=60)
    metrics.observe_run("noop", 0.1, None, "outcome=noop")
    assert metrics.health()[0]
    ok, why = metrics.health(now=time.time() + 61)
    assert not ok and "limit 60s" in why


def test_api_requests_counted_from_a_runs_client_stats(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    stats = ClientStats()
    stats.by_method_status.update({("GET", "200"): 2, ("PUT", "ConnectError"): 1})
    metrics.observe_requests(stats)
    metrics.observe_requests(stats)
    s = samples(base)
    assert s[("groupsync_api_requests_total", (("method", "GET"), ("status", "200")))] == 4
    assert s[("groupsync_api_requests_total", (("method", "PUT"), ("status", "ConnectError")))] == 2


def test_a_busy_port_is_a_clear_error(served: tuple[Metrics, str]) -> None:
    _, base = served
    with pytest.raises(GroupsyncError, match="cannot listen"):
        open_service(Metrics(max_age_s=1)).start(base.removeprefix("http://"))


def test_a_failing_check_makes_healthz_503_with_its_reason(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    metrics.observe_run("noop", 0.1, None, "outcome=noop")
    problem: list[str] = []
    metrics.checks.append(lambda: problem[0] if problem else None)
    assert httpx.get(f"{base}/healthz", timeout=5, verify=False).status_code == 200
    problem.append("journal state/journal.db was replaced and another process holds the new one")
    r = httpx.get(f"{base}/healthz", timeout=5, verify=False)
    assert r.status_code == 503
    assert "another process holds the new one" in r.text
