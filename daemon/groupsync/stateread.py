"""A state snapshot from a file or a URL, for `plan --state`: bounded in size and in time.

A URL is usually the daemon's `GET /state`, read with the bearer token from an environment
variable. Redirects are not followed (the token would go wherever they point), and the answer is
read only up to the snapshot's size limit and within a deadline for the whole fetch, so a server
that never stops sending, or sends a byte a minute, fails the plan instead of hanging it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from groupsync import __version__
from groupsync.secret import Secret
from groupsync.state import MAX_BYTES, SnapshotError, State, load_snapshot

FETCH_TIMEOUT_S = 30.0


def is_url(where: str) -> bool:
    return where.startswith(("http://", "https://"))


def read_snapshot(
    where: str,
    *,
    token: Secret | None = None,
    token_name: str = "the token",
    max_bytes: int = MAX_BYTES,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> State:
    """The snapshot at `where` (a file, or an http(s) URL read with `token` as bearer).

    `token_name` names where the token comes from (`$GROUPSYNC_HTTP_TOKEN`), for the message
    when the server refuses it.
    """
    if is_url(where):
        data = _fetch(where, token, token_name, max_bytes, timeout_s)
    else:
        data = _read_file(Path(where), max_bytes)
    return load_snapshot(data, where, max_bytes=max_bytes)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(max_bytes + 1)  # one byte over is enough for the size check to refuse
    except FileNotFoundError:
        raise SnapshotError(f"state snapshot {path}: no such file") from None
    except OSError as exc:
        raise SnapshotError(f"state snapshot {path}: cannot read it: {exc.strerror}") from None


def _fetch(
    url: str, token: Secret | None, token_name: str, max_bytes: int, timeout_s: float
) -> bytes:
    headers = {"User-Agent": f"groupsync/{__version__}", "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.reveal()}"
    deadline = time.monotonic() + timeout_s
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", _parse_url(url, token_name), headers=headers) as answer,
        ):
            _check_status(url, answer, token, token_name)
            return _read_body(url, answer, max_bytes, deadline)
    except httpx.TimeoutException:
        raise SnapshotError(
            f"state snapshot {url}: no complete answer within {timeout_s:g}s"
        ) from None
    except httpx.HTTPError as exc:
        detail = str(exc) or type(exc).__name__
        if token is not None:
            detail = token.redact(detail)
        raise SnapshotError(f"state snapshot {url}: cannot fetch it: {detail}") from None


def _parse_url(url: str, token_name: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SnapshotError(f"state snapshot {url}: not a URL: {exc}") from None
    if parsed.userinfo:
        raise SnapshotError(
            f"state snapshot: the URL holds a user or password; give the token in {token_name}"
        )
    return parsed


def _read_body(url: str, answer: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        _too_big(url, f"{int(declared):,} bytes", max_bytes)
    body = bytearray()
    for chunk in answer.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            _too_big(url, "more", max_bytes)
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the whole answer took too long")
    return bytes(body)


def _check_status(url: str, answer: httpx.Response, token: Secret | None, token_name: str) -> None:
    status = answer.status_code
    if status == httpx.codes.OK:
        return
    if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
        given = "refused the token in" if token is not None else "needs a token; set"
        raise SnapshotError(f"state snapshot {url}: HTTP {status}: the server {given} {token_name}")
    if answer.is_redirect:
        target = answer.headers.get("location", "elsewhere")
        raise SnapshotError(
            f"state snapshot {url}: HTTP {status} redirects to {target}; give that URL"
            " (redirects are not followed, so the token goes nowhere else)"
        )
    raise SnapshotError(f"state snapshot {url}: HTTP {status} {answer.reason_phrase}")


def _too_big(url: str, size: str, max_bytes: int) -> None:
    raise SnapshotError(f"state snapshot {url}: {size}, over the limit of {max_bytes:,} bytes")
