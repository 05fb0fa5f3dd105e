"""Webhooks end to end: `groupsync run` as a subprocess, the emulator sending it signed events.

The schedule is 1 h, so whatever is put back within seconds was put back by a webhook.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from groupsync.emulator import Faults
from groupsync.secret import Secret
from groupsync.webhooksig import HEADER, sign
from helpers import groupsync, token_pieces
from webhook_support import SECRET, USERS, WebhookDaemon, event, quiet, spec_of

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[WebhookDaemon]:
    d = WebhookDaemon(tmp_path, groups=3)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def _rename(d: WebhookDaemon) -> tuple[str, Callable[[dict[str, Any]], bool]]:
    g = d.group("Group 000")
    d.emu.state.update_group(g["id"], {"name": "renamed by hand"})
    return g["id"], lambda now: now["name"] == "Group 000"


def _remove_member(d: WebhookDaemon) -> tuple[str, Callable[[dict[str, Any]], bool]]:
    g = d.group("Group 001")
    d.emu.state.update_group(g["id"], {"contacts": [{"username": "ada"}]})
    return g["id"], lambda now: {c["username"] for c in now["contacts"]} == set(USERS[:3])


def _archive(d: WebhookDaemon) -> tuple[str, Callable[[dict[str, Any]], bool]]:
    g = d.group("Group 002")
    d.emu.state.update_group(g["id"], {"archived_at": 1_700_000_000})
    return g["id"], lambda now: now["archived_at"] is None


@pytest.mark.parametrize("change", [_rename, _remove_member, _archive], ids=lambda f: f.__name__)
def test_a_hand_made_change_is_put_back_within_2s(
    daemon: WebhookDaemon, change: Callable[[WebhookDaemon], Any]
) -> None:
    group_id, restored = change(daemon)
    started = time.monotonic()
    daemon.wait(lambda: restored(daemon.emu.state.get(group_id)), "the repair", timeout=2)
    took = time.monotonic() - started
    [(_, outcome)] = daemon.wait(lambda: daemon.runs("webhook"), "the repair's run to finish")
    assert outcome == "applied"
    assert len(daemon.runs("schedule")) == 0
    assert took < 2
    daemon.wait(lambda: daemon.new_outcomes().get("repaired") == 1, "the repaired event's count")


def test_bad_deliveries_are_refused_before_anything_is_read(daemon: WebhookDaemon) -> None:
    g = daemon.group("Group 000")
    good = json.dumps(event("group.updated", {**g, "name": "x"})).encode()
    other = json.dumps(event("group.updated", {**g, "name": "y"})).encode()
    before = daemon.emu.count()
    post = daemon.http.post
    url = "/webhooks/ecampus"
    assert post(url, content=good).status_code == 401  # unsigned
    assert post(url, content=good, headers={HEADER: "ab" * 32}).status_code == 401
    assert post(url, content=good, headers={HEADER: sign(Secret("wrong"), good)}).status_code == 401
    assert post(url, content=good, headers={HEADER: sign(Secret(SECRET), other)}).status_code == 401
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    assert post(url, content=big, headers={HEADER: sign(Secret(SECRET), big)}).status_code == 413
    for bad in (b"not json", b"[]", json.dumps({"id": "e1", "type": "group.updated"}).encode()):
        assert (
            post(url, content=bad, headers={HEADER: sign(Secret(SECRET), bad)}).status_code == 400
        )
    malformed = json.dumps(event("group.updated", {"id": g["id"]})).encode()
    answer = post(url, content=malformed, headers={HEADER: sign(Secret(SECRET), malformed)})
    assert answer.status_code == 400
    assert daemon.post(event("invoice.paid", {"id": "x"})).status_code == 202  # unknown: ignored
    # Both secrets of a rotation are accepted ("old-one,<secret>" in the environment).
    unmanaged = event("group.updated", {**g, "id": "not-managed"})
    assert daemon.post(unmanaged, secret="old-one").status_code == 202
    time.sleep(0.3)  # nothing is awaited here: this checks that nothing happens
    assert daemon.emu.count() == before
    assert daemon.runs("webhook") == []
    assert daemon.new_outcomes() == {"rejected": 8, "noop": 1, "unmanaged": 1}
    # The secret is nowhere: the log, the journal (and its WAL).
    daemon.stop()
    for path in (daemon.log, *daemon.dir.glob("journal.db*")):
        assert not token_pieces(path.read_bytes().decode("latin-1"), SECRET), path


def test_metrics_never_show_the_secret(daemon: WebhookDaemon) -> None:
    daemon.post(event("group.updated", {"id": "x"}), secret="nope")
    text = daemon.http.get("/metrics").text
    assert "groupsync_webhook_events_total" in text
    assert "groupsync_webhook_queue_depth" in text
    assert not token_pieces(text, SECRET)


def test_a_replayed_event_is_repaired_once(daemon: WebhookDaemon) -> None:
    g = daemon.group("Group 000")
    with quiet(daemon.emu):
        renamed = daemon.emu.state.update_group(g["id"], {"name": "by hand"})
    hook = event("group.updated", renamed)
    assert daemon.post(hook).status_code == 202
    daemon.wait(lambda: daemon.runs("webhook"), "the repair")
    assert daemon.emu.state.get(g["id"])["name"] == "Group 000"
    calls = daemon.emu.count()
    assert daemon.post(hook).status_code == 200  # a repeat: recognised, nothing done
    assert daemon.post(hook).status_code == 200
    assert daemon.emu.count() == calls
    assert len(daemon.runs("webhook")) == 1
    assert daemon.new_outcomes().get("duplicate") == 2


def test_events_out_of_order_end_in_the_specs_state(tmp_path: Path) -> None:
    d = WebhookDaemon(tmp_path, groups=3, faults=Faults(seed=7, webhook_delay_ms=400))
    try:
        d.start()
        g = d.group("Group 001")
        for name in ("first", "second", "third"):
            d.emu.state.update_group(g["id"], {"name": name, "contacts": [{"username": "erin"}]})
        d.wait(lambda: d.emu.webhooks.pending() == 0, "the events' delivery")  # type: ignore[union-attr]
        d.wait(lambda: d.emu.state.get(g["id"])["name"] == "Group 001", "the repair")
        members = {c["username"] for c in d.emu.state.get(g["id"])["contacts"]}
        assert members == set(USERS[:3])
        # Late, stale events (the hand-made names) change nothing more.
        d.post(event("group.updated", {**d.emu.state.get(g["id"]), "name": "first"}))
        d.wait(lambda: d.emu.state.get(g["id"])["name"] == "Group 001", "the state to hold")
    finally:
        d.stop()


def test_groupsyncs_own_writes_cost_nothing(tmp_path: Path) -> None:
    d = WebhookDaemon(tmp_path, groups=50)
    try:
        d.start()
        assert d.emu.webhooks is not None
        sent = d.emu.webhooks.sent
        d.spec.write_text(yaml.safe_dump(spec_of(50, description="Fifty changes.")))
        d.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        d.wait(lambda: d.runs("reload"), "the reload's run", timeout=30)
        assert d.runs("reload")[0][1] == "applied"
        calls = d.emu.count()
        d.wait(lambda: d.emu.webhooks.sent >= sent + 50, "the 50 updates' events")  # type: ignore[union-attr]
        d.wait(lambda: d.emu.webhooks.pending() == 0, "every delivery")  # type: ignore[union-attr]
        d.wait(lambda: d.events().get(("group.updated", "noop")) == 50, "50 no-ops")
        assert d.emu.count() == calls  # 0 API calls, so 0 writes
        assert d.runs("webhook") == []
    finally:
        d.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_flood_of_5000_events_for_20_groups(tmp_path: Path) -> None:
    d = WebhookDaemon(tmp_path, groups=20)
    try:
        d.start()
        assert d.proc is not None
        groups = [d.group(f"Group {i:03d}") for i in range(20)]
        counted = sum(d.outcomes().values())
        d.emu.reset_counters()
        rss_before = _rss_kib(d.proc.pid)
        bodies = []
        for n in range(5000):
            g = groups[n % 20]
            body = json.dumps(event("group.updated", {**g, "name": f"flood {n}"})).encode()
            bodies.append((body, sign(Secret(SECRET), body)))
        health: list[int] = []
        done = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=d.url, timeout=2) as c:
                while not done.is_set():
                    health.append(c.get("/healthz").status_code)
                    time.sleep(0.05)

        def send(part: list[tuple[bytes, str]], answers: list[int]) -> None:
            with httpx.Client(base_url=d.url, timeout=10) as c:
                for body, sig in part:
                    answers.append(
                        c.post("/webhooks/ecampus", content=body, headers={HEADER: sig}).status_code
                    )

        prober = threading.Thread(target=probe)
        prober.start()
        answers: list[list[int]] = [[] for _ in range(4)]
        senders = [threading.Thread(target=send, args=(bodies[i::4], answers[i])) for i in range(4)]
        started = time.monotonic()
        for t in senders:
            t.start()
        for t in senders:
            t.join(timeout=110)
        flood_s = time.monotonic() - started
        d.wait(
            lambda: sum(d.outcomes().values()) == counted + 5000, "every event counted", timeout=20
        )
        done.set()
        prober.join(timeout=5)
        assert sorted({a for part in answers for a in part}) == [202]
        outcomes = d.outcomes()
        assert outcomes.get("error", 0) == 0  # none lost
        assert health and set(health) == {200}
        gets = d.emu.count("GET", "/v1/groups/{id}")
        windows = int(flood_s) + 2  # debounce 1 s: at most one repair a key a window
        assert gets <= 20 * windows
        assert d.emu.count("PUT") == 0  # the events lied; the groups were right all along
        assert _rss_kib(d.proc.pid) - rss_before < 30 * 1024
    finally:
        d.stop()


def test_webhooks_enabled_without_a_secret_is_an_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_of(1)))
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "spec": {"path": str(spec)},
                "http": {"listen": "127.0.0.1:0"},
                "webhooks": {"enabled": True, "secret_env": "NO_SUCH_SECRET_VAR"},
                "api": {"base_url": "http://127.0.0.1:9"},
            }
        )
    )
    out = groupsync("run", "--config", str(config), token="t")
    assert out.returncode == 1
    assert "webhooks.enabled but no webhook secret: set $NO_SUCH_SECRET_VAR" in out.stderr
    assert "Traceback" not in out.stderr
