"""Client behaviours the emulator cannot produce, driven through httpx.MockTransport.

Everything the emulator can do is tested against it in test_api.py; these cover the rest of what
ecampus-api.md allows a server to do: 409, an HTML proxy page, Retry-After as an HTTP date, a
page repeated whole, an empty page promising more, a list failing at a chosen page, a POST
timing out after it was sent.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from groupsync import __version__
from groupsync.api import (
    AmbiguousWrite,
    Client,
    Conflict,
    InvalidRequest,
    MalformedAnswer,
    RateLimited,
    ServerError,
    call_trace,
    parse_retry_after,
)
from helpers import api_client

TOKEN = "tok-7f3a9c-never-shown"


class Recorder:
    """Stands in for asyncio.sleep: retries happen at once and the delays are kept for asserts."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_client(
    handler: Callable[[httpx.Request], httpx.Response], sleep: Recorder, **kwargs: object
) -> Client:
    options: dict[str, object] = {"max_requests_per_s": 1000, "backoff_base_s": 0.01, **kwargs}
    return api_client(
        "http://ecampus.test/v1",
        TOKEN,
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        **options,  # type: ignore[arg-type]
    )


def group(group_id: str) -> dict[str, object]:
    return {"id": group_id, "name": f"group {group_id}", "contacts": [], "created_at": 1}


@pytest.mark.anyio
async def test_409_is_a_conflict_and_not_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(409, json={"type": "invalid_request", "message": "changed meanwhile"})

    sleep = Recorder()
    async with make_client(handler, sleep) as client:
        with pytest.raises(Conflict) as caught:
            await client.update_group("g1", name="x")
    assert len(calls) == 1
    assert sleep.delays == []
    assert (caught.value.status, caught.value.type) == (409, "invalid_request")
    assert caught.value.message == "changed meanwhile"
    assert caught.value.attempts == 1


@pytest.mark.anyio
async def test_html_error_page_gives_a_clean_truncated_error() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 5000 + "</body></html>"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=page, headers={"Content-Type": "text/html; charset=utf-8"})

    sleep = Recorder()
    async with make_client(handler, sleep, max_attempts=3) as client:
        with pytest.raises(ServerError) as caught:
            await client.get_group("g1")
    error = caught.value
    assert error.status == 502 and error.type is None and error.attempts == 3
    assert "text/html" in error.message and "502 Bad Gateway" in error.message
    assert len(str(error)) < 400
    assert len(sleep.delays) == 2


@pytest.mark.anyio
async def test_token_echoed_by_a_proxy_page_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = request.headers["Authorization"]
        return httpx.Response(400, text=f"<pre>bad request; you sent {echoed}</pre>")

    async with make_client(handler, Recorder()) as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.get_group("g1")
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    assert "**********" in caught.value.message


@pytest.mark.anyio
async def test_retry_after_as_an_http_date_is_honoured() -> None:
    answers = iter(
        [
            httpx.Response(
                429,
                json={"type": "api_error", "message": "slow down"},
                headers={"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)},
            ),
            httpx.Response(200, json=group("g1")),
        ]
    )
    sleep = Recorder()
    async with make_client(lambda request: next(answers), sleep) as client:
        assert (await client.get_group("g1")).id == "g1"
    [delay] = sleep.delays
    assert 25 < delay <= 30


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now=now) == 12.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


@pytest.mark.anyio
async def test_retry_after_longer_than_the_budget_gives_up_at_once() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            429, json={"type": "api_error", "message": "x"}, headers={"Retry-After": "120"}
        )

    sleep = Recorder()
    async with make_client(handler, sleep, budget_s=60) as client:
        with pytest.raises(RateLimited) as caught:
            await client.list_groups(archived=False)
    assert caught.value.status == 429 and caught.value.retry_after == 120
    assert len(calls) == 1 and sleep.delays == []


@pytest.mark.anyio
async def test_a_repeated_page_stops_the_listing_at_its_first_repeated_id() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"has_more": True, "data": [group("a"), group("b")]})

    async with make_client(handler, Recorder()) as client:
        with pytest.raises(
            MalformedAnswer, match=r'page 2: data\[0\]\.id: "a" was already on page 1'
        ):
            await client.list_groups(archived=False)
    assert len(calls) == 2
    assert calls[1].url.params["starting_after"] == "b"


@pytest.mark.anyio
async def test_more_promised_on_an_empty_page_stops_the_listing() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"has_more": True, "data": []})

    async with make_client(handler, Recorder()) as client:
        with pytest.raises(MalformedAnswer, match="page 1: has_more: true on an empty page"):
            await client.list_contacts()
    assert len(calls) == 1


@pytest.mark.anyio
async def test_a_list_failing_part_way_raises_instead_of_returning_a_short_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "starting_after" in request.url.params:
            return httpx.Response(503, json={"type": "api_error", "message": "down"})
        return httpx.Response(200, json={"has_more": True, "data": [group("a")]})

    async with make_client(handler, Recorder(), max_attempts=2) as client:
        with pytest.raises(ServerError):
            await client.list_all_groups()


@pytest.mark.anyio
async def test_a_post_timing_out_after_sending_is_ambiguous_and_not_repeated() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    async with make_client(handler, Recorder()) as client:
        with call_trace() as trace, pytest.raises(AmbiguousWrite) as caught:
            await client.create_group(name="Plaza Hotel")
    assert len(calls) == 1
    # apply tells "may still be running server-side" from the cause: keep it chained.
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert (trace.attempts, trace.status) == (1, None)


@pytest.mark.anyio
async def test_a_post_that_never_connected_is_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json=group("g9"))

    async with make_client(handler, Recorder()) as client:
        with call_trace() as trace:
            created = await client.create_group(name="Plaza Hotel")
    assert created.id == "g9"
    assert len(calls) == 2
    assert (trace.attempts, trace.status) == (2, 201)


@pytest.mark.anyio
async def test_a_2xx_create_whose_body_is_unreadable_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, text="<html>created</html>")

    async with make_client(handler, Recorder()) as client:
        with pytest.raises(AmbiguousWrite):
            await client.create_group(name="x")


@pytest.mark.anyio
async def test_sends_bearer_token_user_agent_and_json_with_only_the_given_fields() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=group("g1"))

    async with make_client(handler, Recorder()) as client:
        await client.update_group("g1", members=["b", "a"], archived=False)

    [request] = seen
    assert request.method == "PUT" and request.url.path == "/v1/groups/g1"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == f"groupsync/{__version__}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "contacts": [{"username": "a"}, {"username": "b"}],
        "archived_at": None,
    }


@pytest.mark.anyio
async def test_one_debug_record_per_attempt_in_the_shape_metrics_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = iter(
        [
            httpx.Response(503, json={"type": "api_error", "message": "busy"}),
            httpx.Response(200, json=group("g1")),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/g2"):
            raise httpx.ConnectError("refused", request=request)
        return next(answers)

    caplog.set_level(logging.DEBUG, logger="groupsync.api")
    async with make_client(handler, Recorder(), max_attempts=2) as client:
        await client.get_group("g1")
        with pytest.raises(ServerError):
            await client.get_group("g2")
    attempts = [r for r in caplog.records if r.msg.startswith("%s %s -> ")]
    assert [r.args[:3] for r in attempts] == [  # type: ignore[index]
        ("GET", "/groups/g1", 503),
        ("GET", "/groups/g1", 200),
        ("GET", "/groups/g2", "ConnectError"),
        ("GET", "/groups/g2", "ConnectError"),
    ]
    assert all(len(r.args) == 4 for r in attempts)  # type: ignore[arg-type]
