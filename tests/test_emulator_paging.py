"""Pagination exactly as the contract says: limit, starting_after, ending_before, has_more."""

from __future__ import annotations

import json

import httpx
import pytest

from groupsync.emulator import Emulator, EmulatorState


def page(client: httpx.Client, path: str = "/groups", **params: object) -> tuple[list[str], bool]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"has_more", "data"}
    return [x["id"] for x in body["data"]], body["has_more"]


@pytest.fixture
def groups_250(emulator: Emulator) -> list[str]:
    """250 active groups (all created in the same second: ties) and 7 archived; ids newest first."""
    ids = [emulator.state.add_group(f"G{i}")["id"] for i in range(250)]
    for i in range(7):
        emulator.state.add_group(f"A{i}", archived=True)
    return ids[::-1]


def test_forward_through_250_groups(
    emulator: Emulator, emulator_http: httpx.Client, groups_250: list[str]
) -> None:
    emulator.reset_counters()
    seen: list[str] = []
    cursor: dict[str, str] = {}
    for _ in range(10):  # bounded: 3 pages expected
        ids, more = page(emulator_http, limit=100, **cursor)
        seen += ids
        if not more:
            break
        cursor = {"starting_after": ids[-1]}
    assert seen == groups_250  # newest first; same-second ties broken by creation order
    assert emulator.count(method="GET", path="/v1/groups") == 3


def test_backward_through_250_groups(emulator_http: httpx.Client, groups_250: list[str]) -> None:
    last, more = page(emulator_http, limit=100, starting_after=groups_250[199])
    assert (last, more) == (groups_250[200:], False)
    middle, more = page(emulator_http, limit=100, ending_before=last[0])
    assert (middle, more) == (groups_250[100:200], True)
    first, more = page(emulator_http, limit=100, ending_before=middle[0])
    assert (first, more) == (groups_250[:100], False)
    few, more = page(emulator_http, limit=30, ending_before=groups_250[10])
    assert (few, more) == (groups_250[:10], False)
    some, more = page(emulator_http, limit=3, ending_before=groups_250[10])
    assert (some, more) == (groups_250[7:10], True)


def test_default_limit_is_10(emulator_http: httpx.Client, groups_250: list[str]) -> None:
    assert page(emulator_http) == (groups_250[:10], True)
    assert page(emulator_http, starting_after=groups_250[239]) == (groups_250[240:], False)


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_inclusive(
    emulator_http: httpx.Client, groups_250: list[str], limit: str
) -> None:
    ids, more = page(emulator_http, limit=limit)
    assert ids == groups_250[: int(limit)] and more


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "", "10 "])
@pytest.mark.parametrize("path", ["/groups", "/contacts"])
def test_bad_limit_is_400(emulator_http: httpx.Client, path: str, limit: str) -> None:
    r = emulator_http.get(path, params={"limit": limit})
    assert r.status_code == 400
    assert r.json()["type"] == "invalid_request" and "limit" in r.json()["message"]


@pytest.mark.parametrize("param", ["starting_after", "ending_before"])
@pytest.mark.parametrize("path", ["/groups", "/contacts"])
def test_unknown_cursor_is_400(
    emulator: Emulator, emulator_http: httpx.Client, param, path
) -> None:
    emulator.state.add_group("G", members=["ada"])
    r = emulator_http.get(path, params={param: "nope"})
    assert r.status_code == 400 and "nope" in r.json()["message"]


def test_both_cursors_is_400(emulator_http: httpx.Client, groups_250: list[str]) -> None:
    r = emulator_http.get(
        "/groups", params={"starting_after": groups_250[5], "ending_before": groups_250[1]}
    )
    assert r.status_code == 400


def test_archived_list_pages_separately(emulator_http: httpx.Client, groups_250: list[str]) -> None:
    ids, more = page(emulator_http, archived="true", limit=5)
    assert len(ids) == 5 and more and not set(ids) & set(groups_250)
    rest, more = page(emulator_http, archived="true", limit=5, starting_after=ids[-1])
    assert len(rest) == 2 and not more


def test_cursor_survives_its_group_being_archived(
    emulator_http: httpx.Client, groups_250: list[str]
) -> None:
    """A group archived mid-listing still marks a position, so a client paging on does not fail."""
    ids, _ = page(emulator_http, limit=100)
    emulator_http.put(f"/groups/{ids[-1]}", json={"archived_at": 1_700_000_000})
    nxt, _ = page(emulator_http, limit=100, starting_after=ids[-1])
    assert nxt == groups_250[100:200]


def test_order_is_newest_created_first(emulator: Emulator, emulator_http: httpx.Client) -> None:
    old = emulator.state.add_group("old", created_at=1_000)
    new = emulator.state.add_group("new", created_at=3_000)
    mid = emulator.state.add_group("mid", created_at=2_000)
    assert page(emulator_http) == ([new["id"], mid["id"], old["id"]], False)
    assert page(emulator_http, starting_after=new["id"], limit=1) == ([mid["id"]], True)
    assert page(emulator_http, ending_before=old["id"], limit=1) == ([mid["id"]], True)


def test_created_groups_come_first(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.state.add_group("seeded")
    made = emulator_http.post("/groups", json={"name": "made"}).json()
    assert page(emulator_http)[0][0] == made["id"]


def test_contacts_page_like_groups(emulator: Emulator, emulator_http: httpx.Client) -> None:
    ids = [emulator.state.add_contact(f"u{i}")["id"] for i in range(25)][::-1]
    first, more = page(emulator_http, "/contacts")
    assert (first, more) == (ids[:10], True)
    second, more = page(emulator_http, "/contacts", starting_after=first[-1])
    third, more3 = page(emulator_http, "/contacts", starting_after=second[-1])
    assert (second, more, third, more3) == (ids[10:20], True, ids[20:], False)
    assert page(emulator_http, "/contacts", ending_before=second[0]) == (ids[:10], False)


def test_paging_10000_groups_needs_no_scan() -> None:
    """The benchmark scale: 10,000 groups x 20 members seed, then every page read once."""
    state = EmulatorState()
    state.load_seed(
        {
            "contacts": [{"username": f"u{i}"} for i in range(500)],
            "groups": [
                {"name": f"G{i}", "members": [f"u{(i + j) % 500}" for j in range(20)]}
                for i in range(10_000)
            ],
        }
    )
    seen = 0
    after = None
    for _ in range(101):
        body = json.loads(
            state.list_groups_json(archived=False, limit=100, after=after, before=None)
        )
        data, more = body["data"], body["has_more"]
        seen += len(data)
        assert all(len(g["contacts"]) == 20 for g in data)
        if not more:
            break
        after = data[-1]["id"]
    assert seen == 10_000 and not more
