"""The daemon's HTTP service over real HTTP on 127.0.0.1, reading a real journal file.

Access rules, ETags, the body limit and the slow-client cut-off; the snapshot /state serves is
byte for byte what `state.dumps(state.snapshot(journal))` gives; the daemon's event loop keeps
running while /state is built from another thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from daemon_support import open_service
from groupsync import state
from groupsync.config import ConfigError, http_listen, load_settings, resolve_http_token
from groupsync.errors import GroupsyncError
from groupsync.httpguard import MAX_BODY_BYTES, Limits
from groupsync.httpservice import HttpService
from groupsync.journal import Journal
from groupsync.metrics import Metrics
from groupsync.outcomes import RunOutcome
from groupsync.plan import AppliedState
from groupsync.secret import Secret
from groupsync.statuspage import DaemonView, Health

TOKEN = "http-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fill(journal: Journal, groups: int, *, members: int = 3) -> None:
    roster = {"name": "sis", "kind": "csv", "digest": "d", "groups": 4, "members": 9}
    run = journal.start_run(trigger="startup", mode="apply", spec_digest="s", rosters=[roster])
    for i in range(groups):
        people = frozenset(f"user{i}-{m}" for m in range(members)) if i % 7 else None
        name = "Chess & <Go> Club" if i == 0 else f"Group {i}"
        journal.set_managed(f"g{i:05d}", f"id_{i}", AppliedState(name, None, None, people, i == 3))
    journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={"create": groups})


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "groupsync.db") as j:
        fill(j, 5)
        yield j


@pytest.fixture
def base(journal: Journal) -> Iterator[str]:
    view = DaemonView(health=Health.OK, reason="last run applied", spec_commit="abc123")
    service = open_service(Metrics(max_age_s=60), journal.path, token=Secret(TOKEN), view=view)
    port = service.start("127.0.0.1:0")
    yield f"http://127.0.0.1:{port}"
    service.close()


@pytest.mark.parametrize("groups", [0, 1, 2500])
def test_state_bytes_are_the_snapshots(tmp_path: Path, groups: int) -> None:
    """Batches of 1,000 rows: none, one partial, and several with a remainder."""
    with Journal.open(tmp_path / "j.db") as journal:
        fill(journal, groups)
        odd = AppliedState(
            'Ünïcode "quoted" \\ tab\t', "line\nbreak", None, frozenset({"é"}), False
        )
        journal.set_managed("odd", 'id "é" \\ \u2028', odd)
        slow = state.dumps(state.to_snapshot(state.read_state(journal)))  # from values
        assert state.snapshot_bytes(journal, batch=1000) == slow


@pytest.mark.parametrize("path", ["/state", "/", "/groups/g00000"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
)
def test_private_routes_refuse_a_missing_or_wrong_token(
    base: str, path: str, headers: dict[str, str]
) -> None:
    r = httpx.get(base + path, headers=headers, timeout=5, verify=False)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "g00000" not in r.text and "id_0" not in r.text and "Chess" not in r.text


def test_open_routes_need_no_token(base: str) -> None:
    assert httpx.get(f"{base}/metrics", timeout=5, verify=False).status_code == 200
    assert (
        httpx.get(f"{base}/healthz", timeout=5, verify=False).status_code == 503
    )  # no run observed


def test_state_with_etag_and_304_until_the_journal_changes(base: str, journal: Journal) -> None:
    r = httpx.get(f"{base}/state", headers=AUTH, timeout=5, verify=False)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == state.dumps(state.snapshot(journal))
    etag = r.headers["etag"]
    again = httpx.get(
        f"{base}/state", headers=AUTH | {"If-None-Match": etag}, timeout=5, verify=False
    )
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = httpx.get(
        f"{base}/state", headers=AUTH | {"If-None-Match": '"x"'}, timeout=5, verify=False
    )
    assert other.status_code == 200 and other.headers["etag"] == etag

    journal.forget("g00004")  # the daemon writes: the next answer is the new state
    r = httpx.get(f"{base}/state", headers=AUTH | {"If-None-Match": etag}, timeout=5, verify=False)
    assert r.status_code == 200 and r.headers["etag"] != etag
    assert state.load_snapshot(r.content, "test").managed_count == 4


def test_status_page_escapes_what_people_wrote(base: str) -> None:
    r = httpx.get(f"{base}/", headers=AUTH, timeout=5, verify=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<script" not in r.text.lower()
    assert "abc123" in r.text and ">5<" in r.text  # the spec commit; 5 managed groups
    page = httpx.get(f"{base}/groups/g00000", headers=AUTH, timeout=5, verify=False)
    assert page.status_code == 200
    assert "Chess &amp; &lt;Go&gt; Club" in page.text and "<Go>" not in page.text
    assert 'id="members">not managed<' in page.text and "id_0" in page.text
    page = httpx.get(f"{base}/groups/g00001", headers=AUTH, timeout=5, verify=False)
    assert 'id="members">3<' in page.text
    missing = httpx.get(f"{base}/groups/nope", headers=AUTH, timeout=5, verify=False)
    assert missing.status_code == 404


def test_without_a_token_the_private_routes_do_not_exist(journal: Journal) -> None:
    service = open_service(Metrics(max_age_s=60), journal.path)
    port = service.start("127.0.0.1:0")
    try:
        for path in ("/state", "/", "/groups/g00000"):
            r = httpx.get(f"http://127.0.0.1:{port}{path}", headers=AUTH, timeout=5, verify=False)
            assert r.status_code == 404 and "g00000" not in r.text
        assert (
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, verify=False).status_code
            == 200
        )
    finally:
        service.close()


def test_a_body_over_1_mib_gets_413(base: str) -> None:
    big = b"x" * (MAX_BODY_BYTES + 1)
    r = httpx.request("GET", f"{base}/metrics", content=big, timeout=10, verify=False)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the chunks add up past the limit
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"x" * 65536 + b"y"

    r = httpx.request(
        "GET", f"{base}/state", content=chunks(), headers=AUTH, timeout=10, verify=False
    )
    assert r.status_code == 413
    small = httpx.request("GET", f"{base}/metrics", content=b"x" * 1000, timeout=5, verify=False)
    assert small.status_code == 200


def test_a_slow_client_is_cut_off(journal: Journal) -> None:
    limits = Limits(head_s=0.5)
    service = HttpService(
        Metrics(max_age_s=60), journal.path, DaemonView, token=None, limits=limits
    )
    port = service.start("127.0.0.1:0")
    try:
        for sent in (b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(sent)
                started = time.monotonic()
                assert sock.recv(100) == b""  # closed by the server, with nothing said
                assert 0.3 < time.monotonic() - started < 3
        # A client that sends its request in time is served as always.
        assert (
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, verify=False).status_code
            == 200
        )
    finally:
        service.close()


def test_the_daemon_loop_runs_on_while_state_is_built(tmp_path: Path) -> None:
    """The worst stall of an event loop in this thread while another fetches a 20,000-group
    /state: the service reads and encodes on its own threads, never on the daemon's loop."""
    with Journal.open(tmp_path / "j.db") as journal:
        fill(journal, 20_000, members=10)
    service = open_service(Metrics(max_age_s=60), tmp_path / "j.db", token=Secret(TOKEN))
    port = service.start("127.0.0.1:0")
    fetched: list[float] = []

    def fetch() -> None:
        started = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/state", headers=AUTH, timeout=30, verify=False)
        assert r.status_code == 200
        fetched.append(time.monotonic() - started)

    async def worst_lag() -> float:
        worst = 0.0
        thread = threading.Thread(target=fetch)
        thread.start()
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            before = time.monotonic()
            await asyncio.sleep(0.001)
            worst = max(worst, time.monotonic() - before)
        thread.join(5)
        return worst

    try:
        lag = asyncio.run(worst_lag())
    finally:
        service.close()
    assert fetched, "the fetch did not finish"
    print(f"/state of 20,000 groups: {fetched[0]:.3f} s; worst loop stall {lag * 1000:.1f} ms")
    assert lag < 0.1


# --- config --------------------------------------------------------------------------------


def settings(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "groupsync.yaml"
    config.write_text("spec: {path: g}\n" + text, encoding="utf-8")
    return load_settings(config)


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "metrics.example:9464"])
def test_a_reachable_listen_without_a_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str
) -> None:
    monkeypatch.delenv("GROUPSYNC_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    s = settings(tmp_path, f"http: {{listen: '{listen}'}}\n")
    with pytest.raises(GroupsyncError, match="reachable from other machines, so it needs a token"):
        resolve_http_token(s)
    monkeypatch.setenv("GROUPSYNC_HTTP_TOKEN", TOKEN)
    assert resolve_http_token(s) == Secret(TOKEN)


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:9464", "localhost:9464"])
def test_loopback_needs_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str
) -> None:
    monkeypatch.delenv("GROUPSYNC_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert resolve_http_token(settings(tmp_path, f"http: {{listen: '{listen}'}}\n")) is None


def test_token_from_file_and_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROUPSYNC_HTTP_TOKEN", raising=False)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "groupsync-http-token").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_http_token(settings(tmp_path, "")) == Secret("from-credential")
    (tmp_path / "tok").write_text("from-file\n")
    s = settings(tmp_path, "http: {token_file: tok}\n")
    assert resolve_http_token(s) == Secret("from-file")
    (tmp_path / "tok").write_text("")
    with pytest.raises(GroupsyncError, match=r"the HTTP token file .* is empty"):
        resolve_http_token(s)


def test_metrics_listen_is_the_old_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path, "metrics: {listen: '127.0.0.1:9100'}\n")
    assert http_listen(s) == "127.0.0.1:9100"
    assert "metrics.listen is deprecated: write http.listen" in caplog.text
    with pytest.raises(ConfigError, match=r"set http\.listen only"):
        settings(
            tmp_path, "metrics: {listen: '127.0.0.1:9100'}\nhttp: {listen: '127.0.0.1:9101'}\n"
        )
