"""Contract tests: the client against the emulator over real HTTP on 127.0.0.1.

Call counts, concurrency and request rates are asserted where they matter: at the emulator.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from groupsync.api import (
    AmbiguousWrite,
    ApiError,
    AuthError,
    Client,
    InvalidRequest,
    NotFound,
    ReadOnlyViolation,
    ServerError,
    call_trace,
)
from groupsync.emulator import Faults, serve_emulator
from helpers import api_client, free_port

TOKEN = "test-token"
GROUPS = "/v1/groups"
GROUP = "/v1/groups/{id}"


class Sleep:
    """Stands in for asyncio.sleep in retries: records each delay, runs a hook, waits no time."""

    def __init__(self, hook: Callable[[int], None] = lambda n: None) -> None:
        self.delays: list[float] = []
        self._hook = hook

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self._hook(len(self.delays))


def count(
    emulator: Any, method: str | None = None, path: str | None = None, status: int | None = None
) -> int:
    """The emulator's count once it is quiet: it records a request after the answer has left, so
    a client can see the answer a moment before the counter moves."""
    deadline = time.monotonic() + 2
    while emulator.app.counters.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    return emulator.count(method, path, status)


def arrived(emulator: Any, expected: int) -> int:
    """How many requests reached the emulator, waiting (2 s at most) for `expected`: a request
    the client gave up on at once can reach a busy emulator after the client is done."""
    deadline = time.monotonic() + 2
    while len(emulator.request_times) < expected and time.monotonic() < deadline:
        time.sleep(0.005)
    return len(emulator.request_times)


def connect(emulator: Any, token: str = TOKEN, **kwargs: Any) -> Client:
    options: dict[str, Any] = {
        "max_requests_per_s": 1000,
        "backoff_base_s": 0.01,
        "timeout_s": 5,
        **kwargs,
    }
    return api_client(emulator.base_url, token, **options)


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("active", "archived"), [(1000, 1), (1050, 230)])
async def test_lists_every_page_with_the_minimum_of_calls(
    emulator: Any, active: int, archived: int
) -> None:
    for i in range(active):
        emulator.state.add_group(f"active {i}")
    for i in range(archived):
        emulator.state.add_group(f"archived {i}", archived=True)

    async with connect(emulator) as client:
        groups = await client.list_all_groups()

    assert sorted(g.id for g in groups) == sorted(g["id"] for g in emulator.state.groups())
    assert len(groups) == active + archived
    assert sum(g.archived for g in groups) == archived
    expected_calls = math.ceil(active / 100) + math.ceil(archived / 100)
    assert count(emulator, "GET", GROUPS) == count(emulator, "GET", GROUPS, 200) == expected_calls


@pytest.mark.anyio
async def test_archived_filter_and_fields(emulator: Any) -> None:
    emulator.state.add_group("Plaza Hotel", members=["Hector", "Cedric"], description="Fine.")
    emulator.state.add_group("Old Club", members=["Cliff"], archived=True)

    async with connect(emulator) as client:
        [active] = await client.list_groups(archived=False)
        [archived] = await client.list_groups(archived=True)

    assert (active.name, active.description, active.members) == (
        "Plaza Hotel",
        "Fine.",
        frozenset({"Hector", "Cedric"}),
    )
    assert not active.archived and active.conversation_id
    assert archived.name == "Old Club" and archived.archived and archived.members == {"Cliff"}


@pytest.mark.anyio
async def test_lists_contacts_through_pages(emulator: Any) -> None:
    for i in range(150):
        emulator.state.add_contact(f"user{i:03}", display_name=f"User {i}")

    async with connect(emulator) as client:
        contacts = await client.list_contacts()

    assert sorted(c.username for c in contacts) == [f"user{i:03}" for i in range(150)]
    assert count(emulator, "GET", "/v1/contacts") == 2


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_refused_token_is_an_auth_error_said_plainly_and_not_retried(
    emulator: Any,
) -> None:
    async with connect(emulator, token="wrong-token-5521") as client:
        with pytest.raises(AuthError) as caught:
            await client.list_groups(archived=False)

    assert caught.value.status == 401 and caught.value.attempts == 1
    assert "refused the token" in str(caught.value)
    assert "wrong-token-5521" not in str(caught.value)
    assert count(emulator) == 1


@pytest.mark.anyio
async def test_a_missing_group_is_not_found(emulator: Any) -> None:
    async with connect(emulator) as client:
        with pytest.raises(NotFound) as caught:
            await client.get_group("nope")
        with pytest.raises(NotFound):
            await client.update_group("nope", name="x")

    assert caught.value.status == 404 and caught.value.method == "GET"
    assert count(emulator, "GET", GROUP) == 1 and count(emulator, "PUT", GROUP) == 1


@pytest.mark.anyio
async def test_a_bad_request_carries_the_server_message_and_is_not_retried(emulator: Any) -> None:
    async with connect(emulator) as client:
        with pytest.raises(InvalidRequest) as empty_name:
            await client.create_group(name="")
        with pytest.raises(InvalidRequest) as unknown_member:
            await client.create_group(name="CS 101", members=["ghost.user"])

    assert empty_name.value.status == 400 and empty_name.value.type == "invalid_request"
    assert "name" in empty_name.value.message
    assert "ghost.user" in unknown_member.value.message
    assert count(emulator, "POST", GROUPS) == count(emulator, "POST", GROUPS, 400) == 2
    assert emulator.state.groups() == []


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_is_retried_after_the_retry_after_delay(emulator: Any) -> None:
    group = emulator.state.add_group("Plaza Hotel")
    emulator.faults.rate_limit_per_s = 1  # a burst of one: the second call is refused

    def lift_limit(n: int) -> None:
        emulator.faults.rate_limit_per_s = None

    sleep = Sleep(lift_limit)
    async with connect(emulator, sleep=sleep) as client:
        await client.get_group(group["id"])
        with call_trace() as trace:
            await client.get_group(group["id"])

    assert sleep.delays == [1.0]
    assert (trace.attempts, trace.status) == (2, 200)
    assert count(emulator, "GET", GROUP, 429) == 1 and count(emulator, "GET", GROUP, 200) == 2
    assert client.stats.retries == 1 and client.stats.by_status[429] == 1


@pytest.mark.anyio
async def test_429_without_retry_after_backs_off(emulator: Any) -> None:
    emulator.faults.update(rate_limit_per_s=1, retry_after_missing_fraction=1.0)
    emulator.state.add_group("Plaza Hotel")

    def lift_limit(n: int) -> None:
        if n == 2:
            emulator.faults.rate_limit_per_s = None

    sleep = Sleep(lift_limit)
    async with connect(emulator, sleep=sleep, backoff_base_s=0.5) as client:
        await client.list_groups(archived=False)
        await client.list_groups(archived=False)

    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 0.5 and 0 <= sleep.delays[1] <= 1.0
    assert count(emulator, "GET", GROUPS, 429) == 2 and count(emulator, "GET", GROUPS, 200) == 2


@pytest.mark.anyio
async def test_5xx_is_retried_until_it_succeeds(emulator: Any) -> None:
    group = emulator.state.add_group("Plaza Hotel")
    emulator.faults.error_fraction = 1.0

    def recover(n: int) -> None:
        if n == 2:
            emulator.faults.error_fraction = 0.0

    async with connect(emulator, sleep=Sleep(recover)) as client:
        with call_trace() as trace:
            updated = await client.update_group(group["id"], description="The finest.")

    assert updated.description == "The finest."
    assert (trace.attempts, trace.status) == (3, 200)
    assert count(emulator, "PUT", GROUP) == 3 and count(emulator, "PUT", GROUP, 200) == 1


@pytest.mark.anyio
async def test_5xx_retries_stop_at_the_attempt_limit(emulator: Any) -> None:
    emulator.faults.error_fraction = 1.0
    async with connect(emulator, sleep=Sleep(), max_attempts=3) as client:
        with pytest.raises(ServerError) as caught:
            await client.list_groups(archived=True)

    assert caught.value.attempts == 3 and caught.value.status in (500, 502, 503)
    assert count(emulator, "GET", GROUPS) == 3


@pytest.mark.anyio
async def test_5xx_retries_stop_at_the_time_budget(emulator: Any) -> None:
    emulator.faults.error_fraction = 1.0
    async with connect(emulator, backoff_base_s=0.05, budget_s=0.2, max_attempts=100) as c:
        with pytest.raises(ServerError) as caught:
            await c.list_groups(archived=False)

    assert 2 <= caught.value.attempts < 100
    assert count(emulator, "GET", GROUPS) == caught.value.attempts


@pytest.mark.anyio
async def test_a_read_timeout_is_retried_then_reported(emulator: Any) -> None:
    emulator.faults.latency_s = 0.3
    async with connect(emulator, timeout_s=0.05, max_attempts=2, sleep=Sleep()) as client:
        with pytest.raises(ServerError) as caught:
            await client.list_groups(archived=False)

    assert caught.value.status is None and caught.value.attempts == 2
    assert client.stats.transport_errors == 2
    assert arrived(emulator, 2) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["get", "create"])
async def test_an_unreachable_server_is_retried_even_for_a_post(method: str) -> None:
    port = free_port()
    sleep = Sleep()
    async with api_client(
        f"http://127.0.0.1:{port}/v1", TOKEN, max_attempts=3, sleep=sleep
    ) as client:
        call = client.get_group("g1") if method == "get" else client.create_group(name="x")
        with pytest.raises(ServerError) as caught:
            await call

    assert not isinstance(caught.value, AmbiguousWrite)
    assert caught.value.attempts == 3 and len(sleep.delays) == 2


# --- writes ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["503", "drop"])
async def test_an_ambiguous_create_is_reported_and_not_repeated(emulator: Any, mode: str) -> None:
    emulator.faults.update(ambiguous_fraction=1.0, ambiguous_mode=mode)
    sleep = Sleep()
    async with connect(emulator, sleep=sleep) as client:
        with call_trace() as trace, pytest.raises(AmbiguousWrite) as caught:
            await client.create_group(name="Plaza Hotel")

    assert "may have been applied" in str(caught.value)
    assert count(emulator, "POST", GROUPS) == 1 and sleep.delays == []
    assert trace.attempts == 1 and trace.status == (503 if mode == "503" else None)
    assert [g["name"] for g in emulator.state.groups()] == ["Plaza Hotel"]


@pytest.mark.anyio
async def test_a_post_answered_5xx_is_ambiguous_and_not_repeated(emulator: Any) -> None:
    emulator.faults.error_fraction = 1.0
    async with connect(emulator, sleep=Sleep()) as client:
        with pytest.raises(AmbiguousWrite) as caught:
            await client.post_message("conv1", "hello")

    assert caught.value.status in (500, 502, 503)
    assert count(emulator, "POST", "/v1/messages") == 1


@pytest.mark.anyio
async def test_a_rate_limited_post_is_safely_retried(emulator: Any) -> None:
    emulator.faults.rate_limit_per_s = 1
    emulator.state.add_contact("prof.ada")

    def lift_limit(n: int) -> None:
        emulator.faults.rate_limit_per_s = None

    async with connect(emulator, sleep=Sleep(lift_limit)) as client:
        await client.list_groups(archived=False)
        created = await client.create_group(name="CS 101", members=["prof.ada"])

    assert created.members == {"prof.ada"}
    assert count(emulator, "POST", GROUPS, 429) == 1 and count(emulator, "POST", GROUPS, 201) == 1
    assert [g["name"] for g in emulator.state.groups()] == ["CS 101"]


@pytest.mark.anyio
@pytest.mark.parametrize(("post_status", "delete_status"), [(201, 204), (200, 200)])
async def test_create_update_archive_restore_delete(
    emulator: Any, post_status: int, delete_status: int
) -> None:
    emulator.faults.update(post_status=post_status, delete_status=delete_status)
    for username in ("prof.ada", "ta.grace", "hector"):
        emulator.state.add_contact(username)

    async with connect(emulator) as client:
        created = await client.create_group(
            name="CS 101", description="Fall term.", members=["prof.ada", "ta.grace"]
        )
        renamed = await client.update_group(created.id, name="CS 101 — Intro")
        regrouped = await client.update_group(created.id, members=["hector"], avatar_url=None)
        archived = await client.update_group(created.id, archived=True)
        restored = await client.update_group(created.id, archived=False)
        with call_trace() as trace:
            await client.delete_group(created.id)

    assert created.members == {"prof.ada", "ta.grace"} and created.description == "Fall term."
    assert renamed.name == "CS 101 — Intro" and renamed.description == "Fall term."
    assert renamed.members == created.members
    assert regrouped.members == {"hector"} and regrouped.name == "CS 101 — Intro"
    assert archived.archived and not restored.archived
    assert trace.status == delete_status
    assert emulator.state.get(created.id) is None
    assert count(emulator, "POST", GROUPS, post_status) == 1


@pytest.mark.anyio
async def test_posts_a_message_into_a_group_conversation(emulator: Any) -> None:
    group = emulator.state.add_group("Plaza Hotel")
    async with connect(emulator) as client:
        message = await client.post_message(group["conversation_id"], "Welcome!")

    assert message["message"] == "Welcome!"
    assert message["conversation_id"] == group["conversation_id"]


@pytest.mark.anyio
async def test_a_read_only_client_refuses_every_write_before_sending(emulator: Any) -> None:
    group = emulator.state.add_group("Plaza Hotel")
    emulator.reset_counters()
    writes: list[Callable[[Client], Awaitable[object]]] = [
        lambda c: c.create_group(name="x"),
        lambda c: c.update_group(group["id"], name="y"),
        lambda c: c.update_group(group["id"], archived=True),
        lambda c: c.delete_group(group["id"]),
        lambda c: c.post_message(group["conversation_id"], "hi"),
    ]
    async with connect(emulator, read_only=True) as client:
        for write in writes:
            with pytest.raises(ReadOnlyViolation):
                await write(client)
        assert count(emulator) == 0 and client.stats.requests == 0
        assert [g.id for g in await client.list_all_groups()] == [group["id"]]

    assert emulator.state.get(group["id"])["name"] == "Plaza Hotel"
    assert count(emulator, "GET") == 2


# --- limits ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("own_transport", [False, True], ids=["default", "caller-transport"])
async def test_never_more_than_max_concurrency_in_flight(
    emulator: Any, own_transport: bool
) -> None:
    group = emulator.state.add_group("Plaza Hotel")
    emulator.faults.latency_s = 0.05
    # A caller's transport keeps its own (larger) pool: the client must still hold the line.
    transport = httpx.AsyncHTTPTransport() if own_transport else None
    async with connect(emulator, max_concurrency=3, transport=transport) as client:
        await asyncio.gather(*(client.get_group(group["id"]) for _ in range(15)))

    assert count(emulator, "GET", GROUP, 200) == 15
    assert 2 <= emulator.max_in_flight <= 3


@pytest.mark.anyio
async def test_never_more_than_max_requests_per_second(emulator: Any) -> None:
    group = emulator.state.add_group("Plaza Hotel")
    rate = 20
    async with connect(emulator, max_requests_per_s=rate, max_concurrency=8) as client:
        await asyncio.gather(*(client.get_group(group["id"]) for _ in range(40)))

    assert count(emulator, "GET", GROUP, 200) == 40
    # The client allows a burst of rate/5 on top of the rate; a busy test machine can bunch
    # arrivals a little (0.2 s worth). Without the limit all 40 would land within one second.
    assert emulator.max_per_second() <= rate + rate // 5 + 4


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_token_never_shows_in_repr_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-live-9f8e7d6c5b4a"
    faults = Faults(error_fraction=1.0)
    with serve_emulator(token=secret, faults=faults) as emulator:
        caplog.set_level(logging.DEBUG, logger="groupsync.api")
        client = connect(emulator, token=secret, max_attempts=2, sleep=Sleep())
        texts = [repr(client), str(client)]
        async with client:
            for call in (client.list_groups(archived=False), client.create_group(name="x")):
                with pytest.raises(ApiError) as caught:
                    await call
                texts += [str(caught.value), repr(caught.value)]
            faults.error_fraction = 0.0
            await client.list_groups(archived=False)
        async with connect(emulator, token="wrong-" + secret) as refused:
            with pytest.raises(AuthError) as auth:
                await refused.list_groups(archived=False)
            texts += [str(auth.value), repr(auth.value), repr(refused)]

    messages = [record.getMessage() for record in caplog.records]
    assert any("GET /groups -> 200" in m for m in messages)
    assert any("POST /groups -> 5" in m for m in messages)
    assert all(secret not in text for text in texts + messages)


def test_read_only_cannot_be_switched_off_after_construction(emulator: Any) -> None:
    client = connect(emulator, read_only=True)
    with pytest.raises(AttributeError):
        client.read_only = False  # type: ignore[misc]
    assert client.read_only
