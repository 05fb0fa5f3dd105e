"""The eCampus HTTP API (ecampus-api.md) on Starlette, wrapped in the fault/counting layer.

`EmulatorApp` sits in front of the routes for /v1 only: it counts every request, then applies
latency, auth, the rate limit and injected errors in the order a real gateway would, and
garbles the answer of committed writes for "ambiguous write" faults. /_admin is never faulted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from groupsync.emulator import endless
from groupsync.emulator.counters import DROPPED, RequestCounters
from groupsync.emulator.faults import WRITES, Faults
from groupsync.emulator.state import ApiFailure, EmulatorState
from groupsync.emulator.webhooks import WebhookSender
from groupsync.secret import Secret

MAX_NAME = 100
_INT = re.compile(r"[0-9]+")


def _error(
    status: int, message: str, type_: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    type_ = type_ or ("api_error" if status >= 500 else "invalid_request")
    return JSONResponse({"type": type_, "message": message}, status_code=status, headers=headers)


def _echo(mode: str, authorization: str) -> Response:
    """A 400 that repeats the Authorization header, the way careless servers and proxies do."""
    if mode == "type":
        return JSONResponse({"type": authorization, "message": "bad"}, status_code=400)
    if mode == "message":
        message = f"malformed header: Authorization: {authorization}"
        return JSONResponse({"type": "invalid_request", "message": message}, status_code=400)
    # A proxy's page, long, with the header's token starting at character 185: a client that
    # cuts the page at 200 characters before redacting it keeps 15 characters of the token.
    head = "<html><head><title>400 Bad Request</title></head><body><h1>400 Bad Request</h1>"
    head += "<p>Request Header Or Cookie Too Large</p><pre>"
    label = "Authorization: "
    head = head.ljust(185 - len(label + "Bearer "), ".") + label
    tail = "</pre><hr><p>" + "nginx " * 300 + "</p></body></html>"
    return HTMLResponse(head + authorization + tail, status_code=400)


def _bearer_ok(header: str | None, token: Secret) -> bool:
    scheme, _, credential = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credential.strip().encode(), token.reveal().encode()
    )


# --- request parsing and validation ----------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    """JSON object, or form fields (scalars only, as the vendor's curl examples send)."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        try:
            fields: dict[str, Any] = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except UnicodeDecodeError as e:
            raise ApiFailure(400, "form body is not valid UTF-8") from e
        if "contacts" in fields:
            raise ApiFailure(400, "contacts is an array: send it in a JSON body")
        if "archived_at" in fields:
            fields["archived_at"] = _form_timestamp(fields["archived_at"])
        return fields
    if ctype.startswith("multipart/"):
        raise ApiFailure(400, "multipart bodies are not supported: send JSON or form fields")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiFailure(400, f"malformed JSON body: {e}") from e
    if not isinstance(body, dict):
        raise ApiFailure(400, "the body must be a JSON object")
    return body


def _form_timestamp(value: str) -> int | None:
    if value in ("", "null"):
        return None
    if not _INT.fullmatch(value):
        raise ApiFailure(400, "archived_at must be a Unix timestamp or null")
    return int(value)


def _page(request: Request) -> tuple[int, str | None, str | None]:
    q = request.query_params
    raw = q.get("limit", "10")
    if not _INT.fullmatch(raw) or not 1 <= int(raw) <= 100:
        raise ApiFailure(400, "limit must be an integer between 1 and 100")
    after, before = q.get("starting_after"), q.get("ending_before")
    if after is not None and before is not None:
        raise ApiFailure(400, "starting_after and ending_before are mutually exclusive")
    return int(raw), after, before


def _archived(request: Request) -> bool:
    raw = request.query_params.get("archived", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiFailure(400, "archived must be true or false")
    return raw in ("true", "1")


def _group_fields(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The group fields a create/update may set, type-checked; anything else is ignored."""
    out: dict[str, Any] = {}
    if creating or "name" in body:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiFailure(400, "name is required and must be a non-empty string")
        if len(name) > MAX_NAME:
            raise ApiFailure(400, f"name must be at most {MAX_NAME} characters")
        out["name"] = name
    for field in ("description", "avatar_url"):
        if field in body:
            if body[field] is not None and not isinstance(body[field], str):
                raise ApiFailure(400, f"{field} must be a string or null")
            out[field] = body[field]
    if "contacts" in body:
        out["contacts"] = _contact_refs(body["contacts"])
    if not creating and "archived_at" in body:
        stamp = body["archived_at"]
        if stamp is not None and (type(stamp) is not int or stamp < 0):
            raise ApiFailure(400, "archived_at must be a Unix timestamp (integer) or null")
        out["archived_at"] = stamp
    return out


def _contact_refs(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ApiFailure(400, "contacts must be an array of {id} or {username} objects")
    refs = []
    for item in value:
        ref = None
        if isinstance(item, dict):
            for key in ("id", "username"):
                if isinstance(item.get(key), str):
                    ref = {key: item[key]}
                    break
        if ref is None:
            raise ApiFailure(
                400, f"each contact must be {{'id': ...}} or {{'username': ...}}, got {item!r}"
            )
        refs.append(ref)
    return refs


def _text(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ApiFailure(400, f"{field} is required and must be a non-empty string")
    return value


# --- the app ---------------------------------------------------------------------------------


class EmulatorApp:
    """ASGI app: the routes plus the /v1 gateway behaviour (counting, auth, faults)."""

    def __init__(
        self,
        state: EmulatorState,
        faults: Faults,
        counters: RequestCounters,
        *,
        token: Secret,
        admin_token: Secret | None,
    ) -> None:
        self.state = state
        self.faults = faults
        self.counters = counters
        self.token = token
        self.admin_token = admin_token
        self.webhooks: WebhookSender | None = None  # set by build_app with a webhook URL
        self.routes = Starlette(
            routes=[
                Route("/v1/groups", self.list_groups, methods=["GET"]),
                Route("/v1/groups", self.create_group, methods=["POST"]),
                Route("/v1/groups/{id}", self.get_group, methods=["GET"]),
                Route("/v1/groups/{id}", self.update_group, methods=["PUT"]),
                Route("/v1/groups/{id}", self.delete_group, methods=["DELETE"]),
                Route("/v1/contacts", self.list_contacts, methods=["GET"]),
                Route("/v1/contacts/{id}", self.get_contact, methods=["GET"]),
                Route("/v1/messages", self.post_message, methods=["POST"]),
                Route("/_admin/faults", self.admin_faults, methods=["GET", "PUT", "POST"]),
                Route("/_admin/counters", self.admin_counters, methods=["GET"]),
                Route("/_admin/messages", self.admin_messages, methods=["GET"]),
                Route("/_admin/reset", self.admin_reset, methods=["POST"]),
            ],
            exception_handlers={
                ApiFailure: lambda _r, e: _error(e.status, e.message, e.type),
                HTTPException: lambda _r, e: _error(e.status_code, e.detail),
                Exception: lambda _r, e: _error(500, f"internal error: {type(e).__name__}"),
            },
        )

    # --- gateway ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] + "/").startswith("/v1/"):
            await self.routes(scope, receive, send)
            return
        self.counters.started()
        recorder = _Recorder(send, self.counters, scope["method"], self._template(scope))
        if self.faults.drip_s:
            recorder.forward = _dripping(send, self.faults.drip_s)
        try:
            await self._gateway(scope, receive, recorder)
        finally:
            recorder.record(DROPPED)  # no-op if an answer was recorded

    async def _gateway(self, scope: Scope, receive: Receive, send: _Recorder) -> None:
        faults = self.faults
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        authorization = Request(scope).headers.get("authorization")
        if not _bearer_ok(authorization, self.token):
            await _error(401, "missing or invalid bearer token")(scope, receive, send)
            return
        limited, retry_after = faults.rate_limit()
        if limited:
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            await _error(429, "rate limited", headers=headers)(scope, receive, send)
            return
        code = faults.server_error()
        if code is not None:
            await _error(code, "injected server error")(scope, receive, send)
            return
        echo = faults.echo(scope["method"])
        if echo is not None:
            await _echo(echo, authorization or "")(scope, receive, send)
            return
        garble = faults.ambiguous() if scope["method"] in WRITES else None
        if garble is None:
            await self.routes(scope, receive, send)
            return
        buffer = _Buffer()
        await self.routes(scope, receive, buffer.send)
        if not 200 <= buffer.status < 300:  # refused, so nothing committed: answer honestly
            await buffer.replay(send)
        elif garble == "503":
            await _error(503, "service unavailable")(scope, receive, send)
        else:
            send.record(DROPPED)
            await _drop_connection(send.inner)

    def _template(self, scope: Scope) -> str:
        for route in self.routes.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return route.path  # type: ignore[attr-defined]
        return scope["path"]

    # --- /v1 ----------------------------------------------------------------------------

    async def list_groups(self, request: Request) -> Response:
        limit, after, before = _page(request)
        if self.faults.endless_pages:
            body = endless.page_json("groups", limit, after, archived=_archived(request))
            return Response(body, media_type="application/json")
        body = self.state.list_groups_json(
            archived=_archived(request), limit=limit, after=after, before=before
        )
        return self._list_answer(body, after, self.state.retrieve_group)

    async def create_group(self, request: Request) -> Response:
        fields = _group_fields(await _body(request), creating=True)
        group = self.state.create_group(fields, clock_offset_s=self.faults.clock_offset_s)
        return self._answer(group, self.faults.post_status)

    async def get_group(self, request: Request) -> Response:
        return self._answer(self.state.retrieve_group(request.path_params["id"]))

    async def update_group(self, request: Request) -> Response:
        fields = _group_fields(await _body(request), creating=False)
        return self._answer(self.state.update_group(request.path_params["id"], fields))

    async def delete_group(self, request: Request) -> Response:
        deleted = self.state.delete_group(request.path_params["id"])
        if self.faults.delete_status == 204:
            return Response(status_code=204)
        return JSONResponse(deleted, status_code=200)

    async def list_contacts(self, request: Request) -> Response:
        limit, after, before = _page(request)
        if self.faults.endless_pages:
            return Response(
                endless.page_json("contacts", limit, after), media_type="application/json"
            )
        body = self.state.list_contacts_json(limit=limit, after=after, before=before)
        return self._list_answer(body, after, self.state.retrieve_contact)

    def _list_answer(
        self, body: str, after: str | None, retrieve: Callable[[str], dict[str, Any]]
    ) -> Response:
        faults = self.faults
        if faults.override_fields or faults.duplicate_ids:
            page = json.loads(body)
            if faults.duplicate_ids and after is not None:
                page["data"].insert(0, retrieve(after))
            page["data"] = [faults.override(item) for item in page["data"]]
            body = json.dumps(page)
        return Response(body, media_type="application/json")

    def _answer(self, obj: dict[str, Any], status: int = 200) -> Response:
        return JSONResponse(self.faults.override(obj), status_code=status)

    async def get_contact(self, request: Request) -> Response:
        return self._answer(self.state.retrieve_contact(request.path_params["id"]))

    async def post_message(self, request: Request) -> Response:
        body = await _body(request)
        message = self.state.post_message(_text(body, "conversation_id"), _text(body, "message"))
        return JSONResponse(message, status_code=self.faults.post_status)

    # --- /_admin ------------------------------------------------------------------------

    def _admin(self, request: Request) -> None:
        if self.admin_token is None:
            raise ApiFailure(404, "the admin endpoint is disabled (no admin token)")
        if not _bearer_ok(request.headers.get("authorization"), self.admin_token):
            raise ApiFailure(401, "missing or invalid admin bearer token")

    async def admin_faults(self, request: Request) -> Response:
        self._admin(request)
        if request.method != "GET":
            try:
                self.faults.update(**await _body(request))
            except (TypeError, ValueError) as e:
                raise ApiFailure(400, str(e)) from e
        return JSONResponse(self.faults.as_dict())

    async def admin_counters(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse(
            {**self.counters.snapshot(), "max_per_second": self.counters.max_per_second()}
        )

    async def admin_messages(self, request: Request) -> Response:
        """Every message posted, oldest first (`?conversation_id=` for one chat): the API
        itself cannot list them, so this is how a test or a demo sees what was said."""
        self._admin(request)
        conversation = request.query_params.get("conversation_id")
        return JSONResponse({"data": self.state.messages(conversation)})

    async def admin_reset(self, request: Request) -> Response:
        """Zero the counters; with {"state": true} also empty the state."""
        self._admin(request)
        body = await _body(request)
        self.counters.reset()
        if body.get("state") is True:
            self.state.clear()
        return JSONResponse({"reset": True, "state": body.get("state") is True})


class _Recorder:
    """Counts the request once, as its answer starts: before the client can see the answer,
    so a test that asserts counts right after a call never races the server."""

    def __init__(self, send: Send, counters: RequestCounters, method: str, path: str) -> None:
        self.inner = send  # the server's own: dropping the connection needs it
        self.forward = send  # where the answer goes (a drip fault slows it down)
        self._counters = counters
        self._method = method
        self._path = path
        self._recorded = False

    def record(self, status: int) -> None:
        if not self._recorded:
            self._recorded = True
            self._counters.finished(self._method, self._path, status)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.record(message["status"])
        await self.forward(message)


class _Buffer:
    """Holds a committed write's answer back, so the gateway can replace it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        self.messages.append(message)

    async def replay(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


def _dripping(send: Send, pause_s: float) -> Send:
    """`send`, but each body goes out one byte at a time, `pause_s` apart, until the client
    hangs up (uvicorn's per-request cycle, which `send` is bound to, knows when it has)."""
    cycle = getattr(send, "__self__", None)

    async def drip(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        for i in range(len(body)):
            if getattr(cycle, "disconnected", False):
                return
            await send({"type": message["type"], "body": body[i : i + 1], "more_body": True})
            await asyncio.sleep(pause_s)
        await send({**message, "body": b""})

    return drip


async def _drop_connection(send: Send) -> None:
    """Close the socket with no answer at all, as a crashed proxy would.

    uvicorn's `send` is a bound method of its per-request cycle, which holds the transport; once
    the transport is closed and uvicorn has noticed, returning without a response is silent.
    """
    cycle = send.__self__  # type: ignore[attr-defined]
    cycle.transport.close()
    for _ in range(10):
        if cycle.disconnected:
            return
        await asyncio.sleep(0)
