"""The eCampus HTTP client: pagination, typed errors, retries, rate limiting, read-only mode.

Every request goes through `Client._request`, the one place that enforces read-only mode, the
concurrency and rate limits, the retry policy and the call trace, so no method can bypass them.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import logging
import math
import random
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, urlencode

import httpx

from groupsync import __version__
from groupsync.contract import Contract, Malformed
from groupsync.errors import GroupsyncError
from groupsync.models import UNSET, Contact, Group, _Unset
from groupsync.secret import Secret

logger = logging.getLogger("groupsync.api")

T = TypeVar("T")
Item = TypeVar("Item", Group, Contact)

PAGE_SIZE = 100
MAX_PAGES = 1_100
"""Pages one list may take: an account holds at most 100,000 groups (ecampus-api.md), 1,000
pages of 100, plus 10%. The contract sets no limit on contacts; they get the same cap. A server
still saying has_more past it is broken, and reading on would take hours at the rate limit."""
# A connection that fails (refused, unknown host, TLS) is usually a wrong address or a stopped
# API, which no retry fixes: retrying it for the whole budget only keeps a user waiting. A call
# still retries it within its first attempts and seconds, to ride out a restart or a flapping
# balancer; past that the error goes up, and the daemon tries again on its next tick.
_CONNECT_ATTEMPTS = 3
_CONNECT_WINDOW_S = 5.0
_SNIPPET_CHARS = 200
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_READ_ONLY = frozenset({"GET", "HEAD"})
# Raised before any byte of the request left: retrying cannot duplicate a write.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_CONNECT_FAILED = (httpx.ConnectError, httpx.ConnectTimeout)
_NAME_NOT_FOUND = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})
# Paths that exist on any eCampus API: a 404 there means the base URL points elsewhere.
_COLLECTIONS = frozenset({"/groups", "/contacts", "/messages"})
# OpenSSL's words for "the peer answered, but not in TLS" (they vary by OpenSSL version).
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)


class ApiError(GroupsyncError):
    """A request the API did not complete; carries what the server said and how hard we tried."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        attempts: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.type = type
        self.attempts = attempts
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        status = f"HTTP {self.status}" if self.status is not None else "no answer"
        kind = f" {self.type}" if self.type else ""
        tries = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        return f"{where}{status}{kind}: {self.message}{tries}"


class AuthError(ApiError):
    def _describe(self) -> str:
        # Said plainly, because a daemon's operator sees only this line.
        return (
            f"the eCampus API refused the token (HTTP {self.status} on {self.method} {self.path}):"
            " check the configured token"
        )


class NotFound(ApiError):
    pass


class InvalidRequest(ApiError):
    pass


class Conflict(ApiError):
    pass


class RateLimited(ApiError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(ApiError):
    pass


class AmbiguousWrite(ApiError):
    """The write may or may not have happened: re-read before trying again, never blindly repeat."""

    def _describe(self) -> str:
        return f"{super()._describe()}; the write may have been applied"


class MalformedAnswer(ApiError):
    """A 2xx answer off the API contract: planning on it would change the wrong groups."""

    def __init__(self, message: str, *, page: int | None = None, **kwargs: Any) -> None:
        self.page = page
        super().__init__(message, **kwargs)

    def _describe(self) -> str:
        page = f" page {self.page}" if self.page is not None else ""
        return f"{self.method} {self.path}{page}: {self.message}"


class MalformedWrite(AmbiguousWrite, MalformedAnswer):
    """A create answered with an object off the contract: it happened, but made what is unknown."""


class Unreachable(ServerError):
    """No connection to the API at all: said with the address and the cause, as a user reads it."""

    def __init__(self, message: str, *, base_url: str, hint: str, **kwargs: Any) -> None:
        self.base_url = base_url
        self.hint = hint
        super().__init__(message, **kwargs)

    def _describe(self) -> str:
        tries = f"{self.attempts} attempts; " if self.attempts > 1 else ""
        return f"cannot connect to {self.base_url}: {self.message} ({tries}{self.hint})"


class WrongBaseUrl(ApiError):
    """A 404 on a path every eCampus API has: the configured address is not the API's."""

    def __init__(self, message: str, *, base_url: str, **kwargs: Any) -> None:
        self.base_url = base_url
        super().__init__(message, **kwargs)

    def _describe(self) -> str:
        return (
            f"{self.method} {self.path} answered HTTP 404: api.base_url {self.base_url} looks"
            " wrong (the eCampus API's address ends in /v1, e.g. https://api.ecampus.chat/v1)"
        )


class ReadOnlyViolation(GroupsyncError):
    """A dry run tried to write: a bug, caught before anything was sent."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client asks of the API at most: `timeout_s` is each attempt's whole deadline,
    from connecting to the answer's last byte, so a server that trickles bytes cannot hold a
    call longer; `max_pages` caps one list."""

    timeout_s: float = 10
    max_concurrency: int = 8
    max_requests_per_s: float = 10
    max_pages: int = MAX_PAGES

    def __post_init__(self) -> None:
        if min(self.timeout_s, self.max_concurrency, self.max_requests_per_s, self.max_pages) <= 0:
            raise ValueError(
                "timeout_s, max_concurrency, max_requests_per_s and max_pages must be positive"
            )


@dataclass(frozen=True, slots=True)
class Retries:
    """When a failed call is sent again: at most `max_attempts` in all, and never once the next
    wait would pass `budget_s`; each wait is the server's Retry-After, else an exponential
    backoff from `backoff_base_s` up to `backoff_max_s`, with full jitter."""

    max_attempts: int = 8
    budget_s: float = 60
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be positive")


@dataclass
class ClientStats:
    """What the client did, for benchmarks and metrics: every attempt counts, retries included."""

    requests: int = 0
    retries: int = 0
    transport_errors: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_method_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(method, HTTP status or transport error name) -> attempts: the daemon's metrics."""


@dataclass
class CallTrace:
    """Attempts and final HTTP status of the calls made inside one `call_trace()` block."""

    attempts: int = 0
    status: int | None = None


_trace: contextvars.ContextVar[CallTrace | None] = contextvars.ContextVar(
    "call_trace", default=None
)


@contextmanager
def call_trace() -> Iterator[CallTrace]:
    """Record what the API calls in this block did, so apply can journal attempts and status."""
    trace = CallTrace()
    token = _trace.set(trace)
    try:
        yield trace
    finally:
        _trace.reset(token)


@dataclass(frozen=True, slots=True)
class Wait:
    """A call about to sleep before its next attempt: what a status line tells the user."""

    method: str
    path: str
    reason: str  # "HTTP 503", "connection refused", ...
    attempt: int  # the attempt that follows the wait
    delay_s: float
    waited_s: float  # since the call's first attempt began


class WaitListener(Protocol):
    """Told when a call starts waiting on a retry, and when any call is over, either way."""

    def waiting(self, call: object, wait: Wait) -> None: ...

    def done(self, call: object) -> None: ...


_wait_listener: contextvars.ContextVar[WaitListener | None] = contextvars.ContextVar(
    "wait_listener", default=None
)


@contextmanager
def wait_listener(listener: WaitListener) -> Iterator[None]:
    """Report the retry waits of every call made in this block (and tasks it starts) to
    `listener`: a command shows them, the daemon does not need to."""
    token = _wait_listener.set(listener)
    try:
        yield
    finally:
        _wait_listener.reset(token)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait per Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _TokenBucket:
    """Client-side rate limit, so a burst of writes does not earn a wall of 429s."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._capacity = burst
        self._tokens = burst
        self._updated = time.monotonic()

    async def take(self) -> None:
        # No await between reading and reserving: each caller books its own slot (the balance may go
        # negative) and then sleeps off its debt, so waiters are served in order without a lock.
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self._rate)


class _BearerAuth(httpx.Auth):
    """Adds the token per request, so it lives in a Secret rather than in the client's headers."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


class Client:
    """The eCampus API, as groupsync needs it.

    One call takes at most `retries.budget_s` plus one attempt's `limits.timeout_s` (plus waits
    for a concurrency slot or the rate limit). `sleep` is how retries wait (tests pass a
    recorder or a virtual clock). A `transport` passed in brings its own connection limits:
    httpx ignores `limits=` next to `transport=`.
    """

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        limits: Limits | None = None,
        retries: Retries | None = None,
        read_only: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stats: ClientStats | None = None,
    ) -> None:
        _check_token(token)
        self.base_url = base_url
        self.limits = limits = limits if limits is not None else Limits()
        self.retries = retries if retries is not None else Retries()
        self._read_only = read_only
        self.stats = stats if stats is not None else ClientStats()
        self._token = token
        self._sleep = sleep
        self._in_flight = asyncio.Semaphore(limits.max_concurrency)
        rate = limits.max_requests_per_s
        self._bucket = _TokenBucket(rate, burst=max(1.0, rate / 5))
        options: dict[str, Any] = (
            {"transport": transport}
            if transport is not None
            else {
                "limits": httpx.Limits(max_connections=limits.max_concurrency),
                "verify": _tls_context(),
            }
        )
        self._http = httpx.AsyncClient(
            base_url=base_url,
            auth=_BearerAuth(token),
            headers={"User-Agent": f"groupsync/{__version__}", "Accept": "application/json"},
            timeout=httpx.Timeout(limits.timeout_s),
            **options,
        )

    @property
    def read_only(self) -> bool:
        """Fixed at construction: a dry run's client must not be switchable into a writer."""
        return self._read_only

    def __repr__(self) -> str:
        return f"<Client {self.base_url!r} read_only={self.read_only}>"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @functools.cached_property
    def _contract(self) -> Contract:
        """Reads answers; values its errors quote are redacted with this client's token."""
        return Contract(self._token.redact)

    # --- reads -------------------------------------------------------------------------------

    async def list_groups(self, *, archived: bool) -> list[Group]:
        params = {"archived": "true"} if archived else {}
        return await self._list("/groups", params, self._contract.group)

    async def list_all_groups(self) -> list[Group]:
        """Both lists, read concurrently: the API never lists archived and active ones together."""
        archived_task = asyncio.create_task(self.list_groups(archived=True))
        try:
            active = await self.list_groups(archived=False)
        except BaseException:
            archived_task.cancel()
            await asyncio.gather(archived_task, return_exceptions=True)
            raise
        # A group archived between the two reads can show up in both: keep one.
        by_id = {g.id: g for g in active}
        by_id.update((g.id, g) for g in await archived_task)
        return list(by_id.values())

    async def list_contacts(self) -> list[Contact]:
        return await self._list("/contacts", {}, self._contract.contact)

    async def get_group(self, group_id: str) -> Group:
        return await self._request("GET", _group_path(group_id), parse=self._contract.group)

    # --- writes ------------------------------------------------------------------------------

    async def create_group(
        self,
        *,
        name: str,
        description: str | None = None,
        avatar_url: str | None = None,
        members: Iterable[str] = (),
    ) -> Group:
        body: dict[str, Any] = {"name": name, "contacts": _contacts(members)}
        if description is not None:
            body["description"] = description
        if avatar_url is not None:
            body["avatar_url"] = avatar_url
        return await self._request("POST", "/groups", json=body, parse=self._contract.group)

    async def update_group(
        self,
        group_id: str,
        *,
        name: str | _Unset = UNSET,
        description: str | _Unset | None = UNSET,
        avatar_url: str | _Unset | None = UNSET,
        members: Iterable[str] | _Unset = UNSET,
        archived: bool | _Unset = UNSET,
    ) -> Group:
        """PUT only the given fields; `members` replaces the whole list, as the API does."""
        body: dict[str, Any] = {}
        if name is not UNSET:
            body["name"] = name
        if description is not UNSET:
            body["description"] = description
        if avatar_url is not UNSET:
            body["avatar_url"] = avatar_url
        if not isinstance(members, _Unset):
            body["contacts"] = _contacts(members)
        if not isinstance(archived, _Unset):
            body["archived_at"] = int(time.time()) if archived else None
        return await self._request(
            "PUT", _group_path(group_id), json=body, parse=self._contract.group
        )

    async def delete_group(self, group_id: str) -> None:
        await self._request("DELETE", _group_path(group_id), parse=None)

    async def post_message(self, conversation_id: str, text: str) -> dict[str, Any]:
        body = {"conversation_id": conversation_id, "message": text}
        return await self._request("POST", "/messages", json=body, parse=self._contract.message)

    # --- the one place requests are sent ------------------------------------------------------

    async def _list(
        self, path: str, params: Mapping[str, str], read_item: Callable[[Any], Item]
    ) -> list[Item]:
        """Every page or an error: a short list would read as "groups vanished" and be recreated,
        and a malformed or repeated item as a group to change or to create."""
        query: dict[str, Any] = {"limit": PAGE_SIZE, **params}
        endpoint = f"{path}?{urlencode(params)}" if params else path
        listing = _Listing(endpoint, self._contract, read_item)
        for _ in range(self.limits.max_pages):
            has_more = await self._request("GET", path, params=query, parse=listing.add)
            if not has_more:
                return listing.items
            query["starting_after"] = listing.items[-1].id
        raise ApiError(
            f"stopped after {self.limits.max_pages} pages ({len(listing.items)} items), all saying"
            f" has_more: that is past what an account's limits allow (100,000 groups at"
            f" {PAGE_SIZE} a page, plus 10%), so the server's paging looks broken and the list"
            " is not used",
            status=200,
            method="GET",
            path=path,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[Any], T] | None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> T:
        """The read-only guard, then the retries, each wait told to the `wait_listener` if set."""
        if self.read_only and method not in _READ_ONLY:
            raise ReadOnlyViolation(f"read-only client refused {method} {path}: nothing was sent")
        listener = _wait_listener.get()
        if listener is None:
            return await self._send_with_retries(method, path, parse, params, json, on_wait=None)
        call = object()  # this call's identity for the listener
        try:
            on_wait = functools.partial(listener.waiting, call)
            return await self._send_with_retries(method, path, parse, params, json, on_wait=on_wait)
        finally:
            listener.done(call)

    async def _send_with_retries(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T] | None,
        params: Mapping[str, Any] | None,
        json: Any,
        *,
        on_wait: Callable[[Wait], None] | None,
    ) -> T:
        """Attempts until one succeeds or `_retry_delay` says to stop; the answer of the
        successful one is read outside the retry, as a malformed body is no transient error."""
        started = time.monotonic()
        for attempt in range(1, self.retries.max_attempts + 1):
            try:
                response = await self._attempt(method, path, params, json, attempt=attempt)
            except (ServerError, RateLimited) as failure:
                waited_s = time.monotonic() - started
                delay = self._retry_delay(failure, attempt, waited_s)
                if delay is None:
                    raise
                self.stats.retries += 1
                logger.debug("%s %s: retrying in %.2fs (%s)", method, path, delay, failure.message)
                if on_wait is not None:
                    reason = failure.message if failure.status is None else f"HTTP {failure.status}"
                    on_wait(Wait(method, path, reason, attempt + 1, delay, waited_s))
                await self._sleep(delay)
            else:
                if parse is None:
                    return None  # type: ignore[return-value]
                return _parse(parse, _json(response, method, path, attempt), method, path)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        *,
        attempt: int,
    ) -> httpx.Response:
        """One try: a successful answer, or its failure raised as the `ApiError` it means.

        Idempotent calls fail retryably on 429/5xx/connection errors; a POST only when the
        server provably did nothing (429, or the connection never opened)."""
        idempotent = method in _IDEMPOTENT
        trace = _trace.get()
        if trace is not None:
            trace.attempts += 1
        try:
            response = await self._send_once(method, path, params, json)
        except httpx.TransportError as exc:
            if trace is not None:
                trace.status = None
            raise self._transport_error(exc, method, path, attempt, idempotent) from exc
        if trace is not None:
            trace.status = response.status_code
        if not response.is_success:
            raise self._error(response, method, path, attempt, idempotent)
        return response

    def _retry_delay(self, failure: ApiError, attempt: int, waited_s: float) -> float | None:
        """Seconds to wait before the next try (the server's Retry-After, else backoff), or
        None to give up: out of attempts or of the retry budget, and a connection failure
        earns only a short retry (see _CONNECT_ATTEMPTS)."""
        retry_after = getattr(failure, "retry_after", None)
        delay = retry_after if retry_after is not None else self._backoff(attempt)
        if attempt >= self.retries.max_attempts or waited_s + delay > self.retries.budget_s:
            return None
        if isinstance(failure, Unreachable) and (
            attempt >= _CONNECT_ATTEMPTS or waited_s + delay > _CONNECT_WINDOW_S
        ):
            return None
        return delay

    def _transport_error(
        self, exc: httpx.TransportError, method: str, path: str, attempt: int, idempotent: bool
    ) -> ApiError:
        where: dict[str, Any] = {"attempts": attempt, "method": method, "path": path}
        if isinstance(exc, _CONNECT_FAILED):
            cause, hint = _connect_cause(exc, self.limits.timeout_s)
            failure: ApiError = Unreachable(cause, base_url=self.base_url, hint=hint, **where)
        else:
            kind = ServerError if idempotent or isinstance(exc, _UNSENT) else AmbiguousWrite
            if isinstance(exc, httpx.TimeoutException):
                failure = kind(
                    f"timed out after {self.limits.timeout_s:g} s (api.timeout_s)", **where
                )
            else:
                failure = kind(f"the connection broke ({type(exc).__name__})", **where)
        return failure

    async def _send_once(
        self, method: str, path: str, params: Mapping[str, Any] | None, json: Any
    ) -> httpx.Response:
        async with self._in_flight:
            await self._bucket.take()
            self.stats.requests += 1
            started = time.monotonic()
            try:
                response = await self._send_by_deadline(method, path, params, json)
            except httpx.TransportError as exc:
                self.stats.transport_errors += 1
                self.stats.by_method_status[method, type(exc).__name__] += 1
                elapsed = time.monotonic() - started
                logger.debug("%s %s -> %s in %.3fs", method, path, type(exc).__name__, elapsed)
                raise
        self.stats.by_status[response.status_code] += 1
        self.stats.by_method_status[method, str(response.status_code)] += 1
        elapsed = time.monotonic() - started
        logger.debug("%s %s -> %d in %.3fs", method, path, response.status_code, elapsed)
        return response

    async def _send_by_deadline(
        self, method: str, path: str, params: Mapping[str, Any] | None, json: Any
    ) -> httpx.Response:
        """One attempt, ended at `timeout_s` whatever phase it is in: httpx's own timeouts
        bound each socket read, which a server sending a byte at a time never trips."""
        sent = False

        async def watch(event: str, info: Mapping[str, Any]) -> None:
            nonlocal sent
            sent = sent or event.endswith(".send_request_headers.started")

        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await self._http.request(
                    method, path, params=params, json=json, extensions={"trace": watch}
                )
        except TimeoutError as exc:
            # Cancelled by the deadline, which httpx sees only as a cancellation: say which
            # phase it was, since a request not yet sent cannot have changed anything.
            kind = httpx.ReadTimeout if sent else httpx.ConnectTimeout
            raise kind(f"no complete answer within {self.limits.timeout_s:g} s") from exc

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: spreads retries of many callers apart."""
        return random.uniform(
            0, min(self.retries.backoff_max_s, self.retries.backoff_base_s * 2 ** (attempt - 1))
        )

    def _error(
        self, response: httpx.Response, method: str, path: str, attempt: int, idempotent: bool
    ) -> ApiError:
        status = response.status_code
        error_type, message = self._error_body(response)
        kwargs: dict[str, Any] = {
            "status": status,
            "type": error_type,
            "attempts": attempt,
            "method": method,
            "path": path,
        }
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return RateLimited(message, retry_after=retry_after, **kwargs)
        if status >= 500:
            return (ServerError if idempotent else AmbiguousWrite)(message, **kwargs)
        if status == 404 and path in _COLLECTIONS:
            return WrongBaseUrl(message, base_url=self.base_url, **kwargs)
        cls = {401: AuthError, 404: NotFound, 409: Conflict}.get(status)
        if cls is None:
            cls = InvalidRequest if 400 <= status < 500 else ApiError
        return cls(message, **kwargs)

    def _error_body(self, response: httpx.Response) -> tuple[str | None, str]:
        """The documented `{type, message}`, or a short clean snippet of whatever came instead.

        Every field is redacted before it is cut: a proxy's debug page or a careless server may
        echo the Authorization header anywhere, and a cut token still gives most of it away.
        """
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            error_type = body.get("type")
            return (
                self._clean(error_type) if isinstance(error_type, str) else None,
                self._clean(body["message"]),
            )
        kind = self._clean(response.headers.get("Content-Type", "unknown content type"))
        text = self._clean(response.text)
        return None, f"unexpected {kind.split(';')[0]} answer: {text!r}" if text else "empty answer"

    def _clean(self, text: str) -> str:
        """Server text fit for an error: redacted, on one line, at most `_SNIPPET_CHARS` long."""
        text = " ".join(self._token.redact(text).split())
        return text[:_SNIPPET_CHARS] + "…" if len(text) > _SNIPPET_CHARS else text


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle, ~0.1 s of
    blocked event loop, and a reconcile opens a client for reading and another for writing."""
    return httpx.create_ssl_context()


def _check_token(token: Secret) -> None:
    """Refuse a token that cannot go into an HTTP header before anything is sent: httpx would
    fail on every attempt, and the retries would only hide the cause behind a transport error."""
    value = token.reveal()
    problem = None
    if not value:
        problem = "is empty"
    elif "\n" in value:
        problem = "contains a newline"
    elif "\r" in value:
        problem = "contains a carriage return"
    elif any(not 0x20 <= ord(char) < 0x7F and char != "\t" for char in value):
        problem = "contains a control or non-ASCII character"
    if problem is not None:
        where = token.source or "where the token comes from"
        raise GroupsyncError(
            f"the API token {problem}, so it cannot be sent in an HTTP header: check {where}"
        )


def _connect_cause(exc: httpx.TransportError, timeout_s: float) -> tuple[str, str]:
    """(what went wrong, what to check) in a user's words, from the OS or TLS error that httpx
    wraps: "ConnectError" alone does not tell a wrong port from a wrong host."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout_s:g} s", "is the host up and reachable?"
    root = _root_cause(exc)
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {root.verify_message}", "is api.base_url right?"
    if isinstance(root, ssl.SSLError):
        if root.reason in _NOT_TLS:
            return "the server does not speak TLS here", "use http:// in api.base_url?"
        return f"TLS handshake failed ({root.reason or root})", "is api.base_url right?"
    if isinstance(root, socket.gaierror):
        if root.errno in _NAME_NOT_FOUND:
            return "name not found", "is the host name in api.base_url right?"
        return f"name lookup failed ({root.strerror})", "is the network up?"
    if isinstance(root, ConnectionRefusedError):
        return "connection refused", "is api.base_url right, and the API up?"
    if isinstance(root, OSError) and root.strerror:
        return root.strerror[0].lower() + root.strerror[1:], "is the network up?"
    return str(exc) or type(exc).__name__, "is api.base_url right?"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception httpx and httpcore wrapped (bounded: chains may loop)."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _group_path(group_id: str) -> str:
    return f"/groups/{quote(group_id, safe='')}"


def _contacts(members: Iterable[str]) -> list[dict[str, str]]:
    if isinstance(members, str):
        raise TypeError("members must be an iterable of usernames, not one string")
    return [{"username": username} for username in sorted(members)]


def _json(response: httpx.Response, method: str, path: str, attempt: int) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        # A create that answered 2xx did happen; without its id the caller must re-read.
        cls = AmbiguousWrite if method == "POST" else ApiError
        raise cls(
            "the answer is not JSON",
            status=response.status_code,
            attempts=attempt,
            method=method,
            path=path,
        ) from exc


def _parse(parse: Callable[[Any], T], payload: Any, method: str, path: str) -> T:
    try:
        return parse(payload)
    except Malformed as exc:
        # A create that answered 2xx did happen; without a readable group the caller must re-read.
        cls = MalformedWrite if method == "POST" else MalformedAnswer
        raise cls(str(exc), method=method, path=path) from None


class _Listing(Generic[Item]):
    """One list read page by page: every item checked and every id seen once, so the plan never
    works from a garbled or doubled account."""

    def __init__(self, endpoint: str, contract: Contract, read_item: Callable[[Any], Item]) -> None:
        self.items: list[Item] = []
        self._endpoint = endpoint
        self._contract = contract
        self._read_item = read_item
        self._pages = 0
        self._first_seen: dict[str, tuple[int, int]] = {}  # id -> (page, index)

    def add(self, body: Any) -> bool:
        """Read one page's answer into `items`; whether the server says more follow."""
        self._pages += 1
        try:
            return self._add(body)
        except Malformed as exc:
            raise MalformedAnswer(
                str(exc), method="GET", path=self._endpoint, page=self._pages
            ) from None

    def _add(self, body: Any) -> bool:
        data, has_more = self._contract.page(body)
        for i, raw in enumerate(data):
            try:
                item = self._read_item(raw)
            except Malformed as exc:
                raise exc.within(f"data[{i}]") from None
            first = self._first_seen.setdefault(item.id, (self._pages, i))
            if first != (self._pages, i):
                raise Malformed(
                    f"data[{i}].id",
                    f"{self._contract.shown(item.id)} was already on page {first[0]}"
                    f" (data[{first[1]}]): a list names each object once",
                )
            self.items.append(item)
        if has_more and not data:
            raise Malformed("has_more", "true on an empty page: no cursor to go on from")
        return has_more
