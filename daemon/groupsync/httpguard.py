"""What every request to the daemon's HTTP service passes before a route sees it.

- Access: each route says who may call it (`Access`); a bearer token is compared in constant
  time, and a wrong or missing one gets 401 with no data.
- Size: a request body over `MAX_BODY_BYTES` gets 413, whether its Content-Length says so or
  its chunks add up to it.
- Time: a client that sends its request head too slowly is cut off (`Limits.head_s`; uvicorn
  itself only times out idle keep-alive connections), and a request that takes longer than
  `Limits.request_s`, reading its body or writing its answer, is abandoned.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from groupsync.secret import Secret

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    head_s: float = 10.0  # connect (or finish the last answer) to the end of the request head
    request_s: float = 30.0  # request head to the last byte of the answer
    keep_alive_s: int = 5  # uvicorn's: an idle keep-alive connection is closed after this
    connections: int = 64  # uvicorn answers 503 past this many at once


class Access(enum.Enum):
    """Who may call a route."""

    OPEN = "open"  # anyone who can connect: /metrics, /healthz
    TOKEN = "token"  # `Authorization: Bearer <http token>`; 404 when no token is configured
    SIGNED = "signed"  # a body signed with a webhook secret: the route checks it (401)


def refusal(access: Access, token: Secret | None, request: Request) -> Response | None:
    """The answer to a request `access` does not let through, or None to serve it."""
    if access in (Access.OPEN, Access.SIGNED):
        return None
    if token is None:
        return PlainTextResponse("not found: set an HTTP token to serve this page\n", 404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.reveal().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return PlainTextResponse(
            "unauthorized: send Authorization: Bearer <token>\n",
            401,
            headers={"WWW-Authenticate": 'Bearer realm="groupsync"'},
        )
    return None


class Guard:
    """ASGI middleware: the body limit and the request deadline around the routes.

    The body is read whole (at most `MAX_BODY_BYTES`) before a route runs, whether the route
    reads it or not: a client cannot hold a connection open by trickling a body nobody reads.
    """

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self.limits.request_s):
                body = await _read_body(scope, receive)
                if body is None:
                    await _plain(send, 413, "request body over 1 MiB\n")
                    return
                await self.app(scope, _replay(body, receive), watched)
        except TimeoutError:
            if not started:
                await _plain(send, 408, "request took too long\n")
            # Else the answer is cut short: uvicorn closes a connection whose answer is unfinished.


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole request body, or None when it is over the limit (by its header or its bytes)."""
    length = dict(scope["headers"]).get(b"content-length", b"0")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away: nothing to read, nobody to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read already, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _plain(send: Send, status: int, text: str) -> None:
    await PlainTextResponse(text, status, headers={"Connection": "close"})(
        {"type": "http"}, _no_receive, send
    )


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def head_timeout_protocol(head_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request head is not complete
    `head_s` after it opened or after its last answer (a slow or silent client)."""

    class HeadTimeout(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_cycle = self.cycle
            self._timer = self.loop.call_later(head_s, self._late)

        def _late(self) -> None:
            cycle = self.cycle
            idle = cycle is None or cycle.response_complete
            if cycle is self._armed_cycle and idle and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeout
