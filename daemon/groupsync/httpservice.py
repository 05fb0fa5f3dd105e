"""The daemon's one HTTP service (`http.listen`): metrics, health, state and the status pages.

Routes, each with its access rule (`httpguard.Access`; `ROUTES` is where a new one goes):

    GET /metrics        open     Prometheus text
    GET /healthz        open     200 ok / 503 unhealthy, with the reason
    GET /state          token    the journal's state snapshot (ETag; If-None-Match gives 304)
    GET /               token    the status page
    GET /groups/<key>   token    one group's page
    POST /webhooks/ecampus  signed   eCampus events (`webhooks`), when webhooks are enabled

Threads (ARCHITECTURE.md, "The daemon around it"): uvicorn serves from a thread with an event
loop of its own. A reconcile runs CPU-bound stretches on the daemon's loop (a 100,000-group plan
computes for about a second), during which an in-loop server could not even answer /healthz; and
a /state of 100,000 groups takes its own second to build, which on the daemon's loop would hold
every reconcile up. Journal reads go to worker threads, through a read-only connection of the
service's own (WAL: readers never wait for the daemon's writes, nor it for them). What the
daemon knows beyond its journal reaches the service as one frozen `DaemonView`, swapped whole.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from groupsync.asgiserve import BackgroundServer, Server, bind
from groupsync.config import parse_listen
from groupsync.errors import GroupsyncError
from groupsync.httpguard import Access, Guard, Limits, head_timeout_protocol, refusal
from groupsync.journal import Journal
from groupsync.metrics import Metrics
from groupsync.outcomes import RunOutcome
from groupsync.secret import Secret
from groupsync.state import snapshot_bytes
from groupsync.statuspage import (
    CHANGES_SHOWN,
    REFUSALS_SHOWN,
    RUNS_SHOWN,
    WEBHOOK_REPAIRS_SHOWN,
    DaemonView,
    StatusData,
    render_group,
    render_status,
)
from groupsync.webhooks import WEBHOOK_TRIGGER, Receiver

log = logging.getLogger("groupsync.http")
T = TypeVar("T")
READER = "the daemon's HTTP service only reads it"


class JournalReader:
    """A read-only connection to the journal at `path`, opened on first use and again when the
    file there is replaced; one reader at a time (the connection is not shared mid-read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._journal: Journal | None = None
        self._identity: tuple[int, int] | None = None
        self._etag: tuple[tuple[tuple[int, int], int], str] | None = None  # (version, etag)

    def read(self, what: Callable[[Journal], T]) -> T:
        with self._lock:
            return what(self._current())

    def _current(self) -> Journal:
        st = self.path.stat()
        identity = (st.st_dev, st.st_ino)
        if self._journal is None or identity != self._identity:
            if self._journal is not None:
                self._journal.close()
            self._journal = Journal.open(self.path, read_only=READER)
            self._identity = identity
        return self._journal

    def state(self, if_none_match: str | None) -> tuple[str, bytes | None]:
        """(ETag, the snapshot's bytes), or (ETag, None) when `if_none_match` is still it. The
        ETag is the bytes' hash, remembered while the journal is unchanged (`data_version`)."""
        with self._lock:
            journal = self._current()
            assert self._identity is not None
            version = (self._identity, journal.data_version())
            if self._etag is not None and self._etag == (version, if_none_match):
                return self._etag[1], None
            body = snapshot_bytes(journal)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self._etag = (version, etag)
            return etag, body

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    path: str
    endpoint: Callable[[Request], Awaitable[Response]]
    access: Access
    methods: tuple[str, ...] = ("GET",)


class HttpService:
    """The ASGI app of the daemon's HTTP service; `view()` is the daemon's latest DaemonView."""

    def __init__(
        self,
        metrics: Metrics,
        journal_path: Path,
        view: Callable[[], DaemonView],
        *,
        token: Secret | None,
        limits: Limits | None = None,
        receiver: Receiver | None = None,
    ) -> None:
        self.metrics = metrics
        self.receiver = receiver
        self.reader = JournalReader(journal_path)
        self.view = view
        self.token = token
        self.limits = limits or Limits()
        self._server: BackgroundServer | None = None

    def start(self, listen: str) -> int:
        """Bind `listen` ("host:port", "[v6]:port"; port 0 picks one), serve from a thread of
        its own, and return the port."""
        try:
            host, port = parse_listen(listen)
            sock = bind(host, port)
        except (ValueError, OSError) as e:
            raise GroupsyncError(f"http.listen {listen}: cannot listen: {e}") from e
        config = uvicorn.Config(
            self.app(),
            http=head_timeout_protocol(self.limits.head_s),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=self.limits.keep_alive_s,
            limit_concurrency=self.limits.connections,
            server_header=False,
        )
        self._server = BackgroundServer(Server(config), sock, name="groupsync-http")
        return self._server.port

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.reader.close()
        if self.receiver is not None:
            self.receiver.close()

    def routes(self) -> list[RouteSpec]:
        routes = [
            RouteSpec("/metrics", self.serve_metrics, Access.OPEN),
            RouteSpec("/healthz", self.healthz, Access.OPEN),
            RouteSpec("/state", self.state, Access.TOKEN),
            RouteSpec("/", self.status_page, Access.TOKEN),
            RouteSpec("/groups/{key}", self.group_page, Access.TOKEN),
        ]
        if self.receiver is not None:
            routes.append(RouteSpec("/webhooks/ecampus", self.webhook, Access.SIGNED, ("POST",)))
        return routes

    def app(self) -> Guard:
        routes = [Route(r.path, self._guarded(r), methods=list(r.methods)) for r in self.routes()]
        return Guard(Starlette(routes=routes), self.limits)

    def _guarded(self, route: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            refused = refusal(route.access, self.token, request)
            return refused if refused is not None else await route.endpoint(request)

        return endpoint

    async def serve_metrics(self, request: Request) -> Response:
        body = generate_latest(self.metrics.registry)
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: Request) -> Response:
        ok, text = self.metrics.health()
        return PlainTextResponse(f"{'ok' if ok else 'unhealthy'}: {text}\n", 200 if ok else 503)

    async def state(self, request: Request) -> Response:
        etag, body = await run_in_threadpool(
            self.reader.state, request.headers.get("if-none-match")
        )
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if body is None:
            return Response(status_code=304, headers=headers)
        # In slices, so uvicorn's flow control holds one slice in its buffers, not another copy
        # of the whole answer (25 MiB at 100,000 groups).
        headers["Content-Length"] = str(len(body))
        return StreamingResponse(_slices(body), headers=headers, media_type="application/json")

    async def status_page(self, request: Request) -> Response:
        view, problem = self.view(), self.metrics.problem()
        data = await run_in_threadpool(self.reader.read, lambda j: _status_data(j, view, problem))
        return HTMLResponse(render_status(data))

    async def webhook(self, request: Request) -> Response:
        """The body as received (the Guard has read it whole, at most 1 MiB) goes to the
        receiver, in a worker thread: it touches the journal."""
        assert self.receiver is not None
        body = await request.body()
        answer = await run_in_threadpool(self.receiver.receive, body, dict(request.headers))
        return PlainTextResponse(answer.text, answer.status)

    async def group_page(self, request: Request) -> Response:
        key = request.path_params["key"]

        def read(journal: Journal) -> tuple[Any, Any]:
            return journal.managed_group(key), journal.history(limit=RUNS_SHOWN, key=key)

        managed, runs = await run_in_threadpool(self.reader.read, read)
        if managed is None and not runs:
            return PlainTextResponse(f"no group with key {key!r} in the journal\n", 404)
        return HTMLResponse(render_group(key, managed, runs))


async def _slices(body: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), size):
        yield bytes(view[start : start + size])


def _status_data(journal: Journal, view: DaemonView, problem: str | None) -> StatusData:
    with journal.one_read():
        return StatusData(
            view=view,
            problem=problem,
            managed=journal.managed_count(),
            runs=journal.runs(limit=RUNS_SHOWN),
            refusals=journal.runs(limit=REFUSALS_SHOWN, outcome=RunOutcome.REFUSED),
            changes=journal.recent_changes(CHANGES_SHOWN),
            webhook_repairs=journal.runs(limit=WEBHOOK_REPAIRS_SHOWN, trigger=WEBHOOK_TRIGGER),
        )
