"""The emulator over real HTTP: every endpoint and validation rule of ecampus-api.md."""

from __future__ import annotations

import httpx
import pytest

from groupsync.emulator import Emulator


@pytest.fixture
def http(emulator: Emulator) -> httpx.Client:
    with httpx.Client(
        base_url=emulator.base_url, headers={"Authorization": "Bearer test-token"}, timeout=10
    ) as client:
        yield client


def test_create_then_get_and_list(emulator: Emulator, http: httpx.Client) -> None:
    emulator.state.add_contact("ada")
    r = http.post("/groups", json={"name": "CS 101", "contacts": [{"username": "ada"}]})
    assert r.status_code == 201
    group = r.json()
    assert http.get(f"/groups/{group['id']}").json() == group
    assert http.get("/groups").json() == {"has_more": False, "data": [group]}
    assert emulator.count(method="POST", path="/v1/groups") == 1
