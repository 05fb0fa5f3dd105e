"""An API that cannot be reached, or is not the API: the client fails fast and says why in words.

Every server here is real and on 127.0.0.1: a closed port, the emulator's plain-HTTP port
spoken to in TLS, a TLS server with a self-signed certificate, a port that accepts but never
answers. The one name lookup uses a label too long for DNS, which the resolver refuses without
sending a query.
"""

from __future__ import annotations

import asyncio
import gc
import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from groupsync.api import (
    Client,
    NotFound,
    ServerError,
    Unreachable,
    Wait,
    WrongBaseUrl,
    wait_listener,
)
from groupsync.emulator import Emulator
from groupsync.errors import GroupsyncError
from groupsync.secret import Secret
from groupsync.waitline import WaitLine, on_terminal, render
from helpers import api_client, free_port

TOKEN = "test-token"
# 64 characters: longer than a DNS label may be, so the lookup fails before any query is sent.
NO_SUCH_HOST = "a" * 64 + ".invalid"


def client(base_url: str, token: Secret | str = TOKEN, **kwargs: Any) -> Client:
    return api_client(base_url, token, max_requests_per_s=1000, **kwargs)


async def failure_of(base_url: str, **kwargs: Any) -> tuple[Exception, float]:
    """The error a group listing ends in, and how long a user waits for it: the real attempts'
    time plus the waits between them, recorded instead of slept (the longest run of waits of
    the listing's concurrent calls)."""
    waits: dict[asyncio.Task[Any] | None, float] = {}

    async def record(delay: float) -> None:
        task = asyncio.current_task()
        waits[task] = waits.get(task, 0.0) + delay

    started = time.monotonic()
    async with client(base_url, sleep=record, **kwargs) as c:
        with pytest.raises(Exception) as caught:
            await c.list_all_groups()
    return caught.value, time.monotonic() - started + max(waits.values(), default=0.0)


@pytest.mark.anyio
async def test_connection_refused_is_said_with_the_address_and_retried_briefly() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    error, elapsed = await failure_of(base_url)

    assert isinstance(error, Unreachable) and isinstance(error, ServerError)
    assert str(error).startswith(f"cannot connect to {base_url}: connection refused (3 attempts;")
    assert "api.base_url" in str(error) and "no answer" not in str(error)
    assert error.attempts == 3
    assert elapsed < 3  # 3 attempts and two jittered waits of at most 0.5 s and 1 s


@pytest.mark.anyio
async def test_a_name_that_does_not_resolve_is_said_so() -> None:
    error, elapsed = await failure_of(f"http://{NO_SUCH_HOST}/v1")

    assert isinstance(error, Unreachable)
    assert "name not found" in str(error) and "host name in api.base_url" in str(error)
    assert elapsed < 3


@pytest.mark.anyio
async def test_https_to_a_plain_http_port_says_so(emulator: Emulator) -> None:
    base_url = f"https://127.0.0.1:{emulator.port}/v1"
    error, elapsed = await failure_of(base_url)

    assert isinstance(error, Unreachable)
    assert str(error).startswith(f"cannot connect to {base_url}: the server does not speak TLS")
    assert "use http:// in api.base_url" in str(error)
    assert elapsed < 3
    assert emulator.count() == 0  # nothing readable as HTTP ever reached it


@pytest.fixture
def self_signed_tls_port(tmp_path: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 whose certificate no CA signed; it only does handshakes."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    files = ["-keyout", key, "-out", cert]
    subprocess.run(
        [openssl, "req", "-x509", *ec_key, "-days", "1", "-subj", "/CN=127.0.0.1", *files],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the client hangs up once it has seen the certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        # A connection the client gave up on mid-handshake (a call cancelled with its sibling)
        # stays open until garbage collection: collect it, so the handshake here ends at once
        # instead of after its 5 s timeout.
        gc.collect()
        thread.join(5)
        listener.close()


@pytest.mark.anyio
async def test_an_untrusted_certificate_is_a_tls_error_in_words(self_signed_tls_port: int) -> None:
    error, elapsed = await failure_of(f"https://127.0.0.1:{self_signed_tls_port}/v1")

    assert isinstance(error, Unreachable)
    assert "TLS certificate not accepted" in str(error) and "self-signed" in str(error)
    assert elapsed < 3


@pytest.mark.anyio
async def test_a_server_that_accepts_but_never_answers_tls_is_a_connect_timeout() -> None:
    # The kernel completes the TCP handshake for a listening socket nobody accepts from: the
    # request never gets past the TLS handshake, so it is "cannot connect", not "no answer".
    with socket.create_server(("127.0.0.1", 0)) as silent:
        error, elapsed = await failure_of(
            f"https://127.0.0.1:{silent.getsockname()[1]}/v1", timeout_s=0.1
        )

    assert isinstance(error, Unreachable)
    assert "no connection within 0.1 s" in str(error)
    assert elapsed < 3


@pytest.mark.anyio
async def test_a_404_on_a_list_says_the_base_url_looks_wrong(emulator: Emulator) -> None:
    root = emulator.base_url.removesuffix("/v1")
    error, _ = await failure_of(root)

    assert isinstance(error, WrongBaseUrl)
    assert f"api.base_url {root} looks wrong" in str(error) and "/v1" in str(error)
    assert error.attempts == 1


@pytest.mark.anyio
async def test_a_404_on_one_group_is_still_not_found(emulator: Emulator) -> None:
    async with client(emulator.base_url) as c:
        with pytest.raises(NotFound):
            await c.get_group("nope")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc\ndef", "contains a newline"),
        ("abc\r\ndef", "contains a newline"),
        ("abc\rdef", "contains a carriage return"),
        ("abc\x00def", "contains a control or non-ASCII character"),
        ("abcédef", "contains a control or non-ASCII character"),
        ("", "is empty"),
    ],
)
async def test_a_token_unfit_for_a_header_is_refused_before_sending(
    emulator: Emulator, value: str, problem: str
) -> None:
    token = Secret(value, source="api.token_file '/etc/groupsync/token'")
    started = time.monotonic()
    with pytest.raises(GroupsyncError) as caught:
        client(emulator.base_url, token=token)

    assert str(caught.value) == (
        f"the API token {problem}, so it cannot be sent in an HTTP header:"
        " check api.token_file '/etc/groupsync/token'"
    )
    assert time.monotonic() - started < 0.5 and emulator.count() == 0


# --- waiting on retries: the hook and the status line --------------------------------------


@pytest.mark.anyio
async def test_each_retry_wait_is_reported_then_the_call_is_done(emulator: Emulator) -> None:
    emulator.faults.update(error_fraction=1.0, seed=1)
    events: list[tuple[str, object, Wait | None]] = []

    class Listener:
        def waiting(self, call: object, wait: Wait) -> None:
            events.append(("waiting", call, wait))

        def done(self, call: object) -> None:
            events.append(("done", call, None))

    with wait_listener(Listener()):
        async with client(emulator.base_url, backoff_base_s=0.01, max_attempts=3) as c:
            with pytest.raises(ServerError):
                await c.list_groups(archived=False)
            emulator.faults.error_fraction = 0.0
            await c.list_groups(archived=False)  # no retry: only its end is reported

    assert [kind for kind, _, _ in events] == ["waiting", "waiting", "done", "done"]
    calls = [call for _, call, _ in events]
    assert calls[0] is calls[1] is calls[2] and calls[3] is not calls[0]
    waits = [w for _, _, w in events if w is not None]
    assert [w.attempt for w in waits] == [2, 3]
    assert all(w.reason in ("HTTP 500", "HTTP 502", "HTTP 503") for w in waits)
    assert all((w.method, w.path) == ("GET", "/groups") for w in waits)
    assert 0 <= waits[0].waited_s <= waits[1].waited_s


def wait(waited_s: float, delay_s: float, attempt: int = 3) -> Wait:
    return Wait("GET", "/groups", "HTTP 503", attempt, delay_s, waited_s)


def test_the_status_line_shows_only_past_two_seconds_and_is_erased() -> None:
    stream = io.StringIO()
    line = WaitLine(stream)
    line.waiting("a", wait(0.2, 0.5))
    assert stream.getvalue() == ""  # a short blip shows nothing

    line.waiting("a", wait(1.9, 4.1))
    assert stream.getvalue() == ("\r\x1b[Kwaiting for the eCampus API: HTTP 503, retry 3 in 4.1 s…")
    line.waiting("b", wait(2.5, 1.0, attempt=2))
    line.done("a")  # "b" still waits: the line stays
    assert not stream.getvalue().endswith("\r\x1b[K")
    line.done("b")
    assert stream.getvalue().endswith("retry 2 in 1.0 s…\r\x1b[K")


def test_render_reads_as_one_sentence() -> None:
    assert render(wait(3, 4.06)) == "waiting for the eCampus API: HTTP 503, retry 3 in 4.1 s…"


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.anyio
@pytest.mark.parametrize("tty", [True, False])
async def test_a_long_wait_is_drawn_on_a_terminal_only(emulator: Emulator, tty: bool) -> None:
    emulator.faults.rate_limit_per_s = 0.25  # one request, then 429 with Retry-After: 4

    async def lift_limit(delay: float) -> None:
        emulator.faults.rate_limit_per_s = None

    stream = Stream(tty)
    with on_terminal(stream):
        async with client(emulator.base_url, sleep=lift_limit) as c:
            await c.list_groups(archived=False)
            await c.list_groups(archived=False)

    assert emulator.count(status=429) == 1
    drawn = "\r\x1b[Kwaiting for the eCampus API: HTTP 429, retry 2 in 4.0 s…\r\x1b[K"
    assert stream.getvalue() == (drawn if tty else "")
