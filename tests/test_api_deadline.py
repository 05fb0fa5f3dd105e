"""A server too slow to finish, or one that never stops paging: the client's calls still end.

Both misbehaviours are emulator faults on a real HTTP server (test_emulator_drip_endless.py):
`drip_s` sends every answer a byte at a time, `endless_pages` answers `has_more: true` for ever
with new ids.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from groupsync import api
from groupsync.api import ApiError, Client
from groupsync.emulator import Emulator
from groupsync.secret import Secret


def connect(emulator: Emulator, **kwargs: Any) -> Client:
    options: dict[str, Any] = {"max_requests_per_s": 1000, "backoff_base_s": 0.01, **kwargs}
    return Client(emulator.base_url, Secret("test-token"), **options)


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
