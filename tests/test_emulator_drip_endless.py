"""The emulator's drip and endless-pages faults, over real HTTP: the misbehaviours the client's
whole-request deadline and page cap are tested against (test_api_deadline.py)."""

from __future__ import annotations

import time

import httpx

from groupsync.emulator import Emulator, Faults

ADMIN = {"Authorization": "Bearer test-admin-token"}
TOKEN = {"Authorization": "Bearer test-token"}
EMPTY_PAGE = b'{"has_more":false,"data":[]}'


def test_drip_sends_the_answer_a_byte_at_a_time(emulator: Emulator) -> None:
    with httpx.Client(base_url=emulator.admin_url, headers=ADMIN, verify=False) as admin:
        assert admin.put("/faults", json={"drip_s": 0.01}).json()["drip_s"] == 0.01
        assert admin.put("/faults", json={"drip_s": -1}).status_code == 400
    started = time.monotonic()
    with httpx.stream("GET", emulator.base_url + "/groups", headers=TOKEN) as response:
        chunks = list(response.iter_raw())
    assert b"".join(chunks) == EMPTY_PAGE
    assert len(chunks) > len(EMPTY_PAGE) // 2  # not one write: byte by byte
    assert time.monotonic() - started >= len(EMPTY_PAGE) * 0.01


def test_endless_pages_never_end_and_never_repeat(emulator: Emulator) -> None:
    with httpx.Client(base_url=emulator.admin_url, headers=ADMIN, verify=False) as admin:
        assert admin.put("/faults", json={"endless_pages": True}).json()["endless_pages"] is True
        assert admin.put("/faults", json={"endless_pages": "yes"}).status_code == 400
    with httpx.Client(base_url=emulator.base_url, headers=TOKEN, verify=False) as web:
        for path, params in (("/groups", {}), ("/groups", {"archived": "true"}), ("/contacts", {})):
            seen: set[str] = set()
            for _ in range(3):
                page = web.get(path, params={"limit": 100, **params}).json()
                ids = {item["id"] for item in page["data"]}
                assert page["has_more"] is True and len(ids) == 100 and not seen & ids
                seen |= ids
                params["starting_after"] = page["data"][-1]["id"]
        assert web.get("/groups", params={"starting_after": "nope"}).status_code == 400


def test_faults_default_to_off() -> None:
    faults = Faults()
    assert faults.drip_s == 0 and faults.endless_pages is False
