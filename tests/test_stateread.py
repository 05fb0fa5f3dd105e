"""`plan --state URL` against real misbehaving servers on 127.0.0.1: refused, never hung."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from groupsync.secret import Secret
from groupsync.state import NO_STATE, SnapshotError, dumps, to_snapshot
from groupsync.stateread import read_snapshot
from helpers import free_port, serve_asgi

TOKEN = Secret("state-bearer-Zq7Xk2Lp9Wm4Rt")  # shares no piece with other tests
SNAPSHOT = dumps(to_snapshot(NO_STATE))


async def state(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {TOKEN.reveal()}":
        return Response(f"bad token {request.headers.get('authorization')}", status_code=401)
    return Response(SNAPSHOT, media_type="application/json")


async def endless(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10_000):  # far over any limit the test sets; stopped by the reader
            yield b" " * 1024

    return StreamingResponse(chunks(), media_type="application/json")


async def drip(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for byte in SNAPSHOT:
            await asyncio.sleep(0.05)
            yield bytes([byte])

    return StreamingResponse(chunks(), media_type="application/json")


APP = Starlette(
    routes=[
        Route("/state", state),
        Route("/moved", lambda request: RedirectResponse("http://127.0.0.1:9/state")),
        Route("/declared", lambda request: Response(b"{}", headers={"content-length": "99999"})),
        Route("/endless", endless),
        Route("/drip", drip),
        Route("/gone", lambda request: Response("not here", status_code=404)),
    ]
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_asgi(APP) as url:
        yield url


def _refusal(where: str, **kwargs: object) -> str:
    with pytest.raises(SnapshotError) as caught:
        read_snapshot(where, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert TOKEN.reveal()[:8] not in message
    return message


def test_the_token_goes_as_bearer(base: str) -> None:
    loaded = read_snapshot(f"{base}/state", token=TOKEN)
    assert loaded.source == "snapshot" and loaded.location == f"{base}/state"


def test_a_refused_or_missing_token_names_the_variable(base: str) -> None:
    wrong = Secret("not-the-bearer-Hy3Vn8Qc")
    message = _refusal(f"{base}/state", token=wrong, token_name="$GROUPSYNC_HTTP_TOKEN")
    assert "HTTP 401: the server refused the token in $GROUPSYNC_HTTP_TOKEN" in message
    message = _refusal(f"{base}/state", token_name="$GROUPSYNC_HTTP_TOKEN")
    assert "HTTP 401: the server needs a token; set $GROUPSYNC_HTTP_TOKEN" in message


def test_redirects_are_not_followed(base: str) -> None:
    message = _refusal(f"{base}/moved", token=TOKEN)
    assert "redirects to http://127.0.0.1:9/state; give that URL" in message


@pytest.mark.parametrize("path", ["/declared", "/endless"])
def test_size_is_bounded_while_reading(base: str, path: str) -> None:
    assert "over the limit of 10,000 bytes" in _refusal(f"{base}{path}", max_bytes=10_000)


def test_a_server_that_drips_is_given_up_on_in_time(base: str) -> None:
    started = time.monotonic()
    message = _refusal(f"{base}/drip", timeout_s=0.5)
    assert "no complete answer within 0.5s" in message
    assert time.monotonic() - started < 5


def test_other_statuses_and_unreachable_servers_are_named(base: str) -> None:
    assert "HTTP 404 Not Found" in _refusal(f"{base}/gone")
    port = free_port()
    message = _refusal(f"http://127.0.0.1:{port}/state", timeout_s=5)
    assert message.startswith(f"state snapshot http://127.0.0.1:{port}/state: cannot fetch it")


def test_a_url_with_a_password_is_refused(base: str) -> None:
    url = base.replace("http://", "http://me:pw@") + "/state"
    assert "the URL holds a user or password" in _refusal(url, token_name="$T")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "state.json"
    assert _refusal(str(missing)) == f"state snapshot {missing}: no such file"
