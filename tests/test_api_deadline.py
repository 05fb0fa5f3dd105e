"""A server too slow to finish, or one that never stops paging: the client's calls still end.

Both misbehaviours are emulator faults on a real HTTP server (test_emulator_drip_endless.py):
`drip_s` sends every answer a byte at a time, `endless_pages` answers `has_more: true` for ever
with new ids.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from groupsync import api
from groupsync.api import AmbiguousWrite, ApiError, Client, ServerError
from groupsync.emulator import Emulator
from helpers import api_client


def connect(emulator: Emulator, **kwargs: Any) -> Client:
    options: dict[str, Any] = {"max_requests_per_s": 1000, "backoff_base_s": 0.01, **kwargs}
    return api_client(emulator.base_url, "test-token", **options)


# --- drip: the whole request has one deadline ----------------------------------------------


@pytest.mark.anyio
async def test_a_dripping_answer_times_out_at_timeout_s_and_the_retries_end(
    emulator: Emulator,
) -> None:
    # 28 bytes 50 ms apart: 1.4 s per answer, yet never 0.3 s without a byte, so a per-read
    # timeout of 0.3 s would wait for all of it; the whole-request deadline ends it at 0.3 s.
    emulator.faults.drip_s = 0.05
    timeout_s, budget_s = 0.3, 0.8
    started = time.monotonic()
    async with connect(emulator, timeout_s=timeout_s, budget_s=budget_s) as client:
        with pytest.raises(ServerError) as caught:
            await client.list_groups(archived=False)
    elapsed = time.monotonic() - started

    error = caught.value
    assert "timed out after 0.3 s (api.timeout_s)" in str(error)
    assert str(error).count("no answer") == 1
    assert error.attempts >= 2  # retried like any transport error of a read
    # Bounded by the budget plus one attempt's deadline (and some slack for a loaded machine).
    assert elapsed < budget_s + timeout_s + 0.5
    assert elapsed >= error.attempts * timeout_s
    assert emulator.count("GET", "/v1/groups") == error.attempts


@pytest.mark.anyio
async def test_a_dripping_create_is_ambiguous_and_not_repeated(emulator: Emulator) -> None:
    emulator.faults.drip_s = 0.05
    async with connect(emulator, timeout_s=0.3) as client:
        with pytest.raises(AmbiguousWrite) as caught:
            await client.create_group(name="Plaza Hotel")

    # The request was sent, so the deadline is a read timeout: apply re-reads before retrying.
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert emulator.count("POST", "/v1/groups") == 1
    assert [g["name"] for g in emulator.state.groups()] == ["Plaza Hotel"]


@pytest.mark.anyio
async def test_a_slow_but_complete_answer_within_the_deadline_is_kept(emulator: Emulator) -> None:
    emulator.faults.drip_s = 0.005  # 28 bytes in about 0.15 s
    async with connect(emulator, timeout_s=5) as client:
        assert await client.list_groups(archived=False) == []


# --- endless pages: the list has a cap ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint", ["/groups", "/contacts"])
async def test_an_endless_list_stops_at_the_page_cap_and_says_why(
    emulator: Emulator, endpoint: str
) -> None:
    emulator.faults.endless_pages = True
    started = time.monotonic()
    async with connect(emulator, max_pages=20) as client:
        with pytest.raises(ApiError) as caught:
            if endpoint == "/groups":
                await client.list_groups(archived=False)
            else:
                await client.list_contacts()
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert message.startswith(f"GET {endpoint}: ")
    assert "stopped after 20 pages (2000 items), all saying has_more" in message
    assert "100,000 groups" in message and "paging looks broken" in message
    assert emulator.count("GET", f"/v1{endpoint}") == 20
    assert elapsed < 5


def test_the_default_cap_is_what_an_account_can_hold_plus_a_margin() -> None:
    # 100,000 groups at 100 a page is 1,000 pages; the cap adds 10%.
    assert api.MAX_PAGES == 1_100 and api.PAGE_SIZE == 100
