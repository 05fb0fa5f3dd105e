"""The emulator's groups, contacts and messages endpoints over real HTTP, rule by rule
(ecampus-api.md and the vendor's Groups page)."""

from __future__ import annotations

import re

import httpx
import pytest

from groupsync.emulator import Emulator

GROUP_FIELDS = {
    "id",
    "name",
    "description",
    "avatar_url",
    "conversation_id",
    "contacts",
    "created_at",
    "archived_at",
}
CONTACT_FIELDS = {
    "id",
    "username",
    "phone_number",
    "avatar_url",
    "display_name",
    "conversation_id",
    "last_active_at",
    "created_at",
}


def assert_error(r: httpx.Response, status: int, type_: str = "invalid_request") -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"type", "message"}
    assert body["type"] == type_
    assert body["message"]
    return body["message"]


# --- groups: create -----------------------------------------------------------------------


def test_create_minimal_group_has_every_documented_field(emulator_http: httpx.Client) -> None:
    r = emulator_http.post("/groups", json={"name": "Plaza Hotel"})
    assert r.status_code == 201
    g = r.json()
    assert set(g) == GROUP_FIELDS
    assert re.fullmatch(r"[A-Za-z0-9]{16}", g["id"])
    assert re.fullmatch(r"[A-Za-z0-9]{16}", g["conversation_id"])
    assert g["name"] == "Plaza Hotel"
    assert g["description"] is None and g["avatar_url"] is None
    assert g["contacts"] == [] and g["archived_at"] is None
    assert type(g["created_at"]) is int and g["created_at"] > 1_600_000_000


def test_create_with_all_fields_and_contacts_by_id_or_username(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    ada = emulator.state.add_contact("prof.ada", display_name="Ada Lovelace")
    emulator.state.add_contact("bob")
    r = emulator_http.post(
        "/groups",
        json={
            "name": "CS 101",
            "description": "Intro",
            "avatar_url": "https://example.org/a.png",
            "contacts": [{"id": ada["id"]}, {"username": "bob"}],
        },
    )
    assert r.status_code == 201
    g = r.json()
    assert (g["description"], g["avatar_url"]) == ("Intro", "https://example.org/a.png")
    assert [c["username"] for c in g["contacts"]] == ["prof.ada", "bob"]
    assert all(set(c) == CONTACT_FIELDS for c in g["contacts"])
    assert g["contacts"][0] == ada
    assert emulator.state.get(g["id"]) == g


def test_same_contact_twice_is_one_member(emulator: Emulator, emulator_http: httpx.Client) -> None:
    ada = emulator.state.add_contact("ada")
    r = emulator_http.post(
        "/groups", json={"name": "x", "contacts": [{"id": ada["id"]}, {"username": "ada"}]}
    )
    assert [c["id"] for c in r.json()["contacts"]] == [ada["id"]]


def test_duplicate_names_are_allowed(emulator_http: httpx.Client) -> None:
    a = emulator_http.post("/groups", json={"name": "Plaza Hotel"}).json()
    b = emulator_http.post("/groups", json={"name": "Plaza Hotel"}).json()
    assert a["id"] != b["id"]
    assert len(emulator_http.get("/groups").json()["data"]) == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"name": 42}, "name"),
        ({"name": "x" * 101}, "100"),
        ({"name": "ok", "description": 5}, "description"),
        ({"name": "ok", "avatar_url": ["x"]}, "avatar_url"),
        ({"name": "ok", "contacts": "ada"}, "contacts"),
        ({"name": "ok", "contacts": None}, "contacts"),
        ({"name": "ok", "contacts": [{"email": "a@b"}]}, "contact"),
        ({"name": "ok", "contacts": ["ada"]}, "contact"),
        ({"name": "ok", "contacts": [{"id": 7}]}, "contact"),
    ],
)
def test_create_validation(
    emulator: Emulator, emulator_http: httpx.Client, body: dict, needle: str
) -> None:
    assert needle in assert_error(emulator_http.post("/groups", json=body), 400)
    assert emulator.state.groups(archived=None) == []


def test_name_of_100_characters_is_fine(emulator_http: httpx.Client) -> None:
    assert emulator_http.post("/groups", json={"name": "x" * 100}).status_code == 201


def test_unknown_contact_refuses_the_whole_create_and_is_named(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    emulator.state.add_contact("ada")
    r = emulator_http.post(
        "/groups",
        json={
            "name": "x",
            "contacts": [{"username": "ada"}, {"username": "ghost"}, {"id": "nope"}],
        },
    )
    message = assert_error(r, 400)
    assert "ghost" in message and "nope" in message and "ada" not in message
    assert emulator.state.groups(archived=None) == []


def test_at_most_1000_contacts_per_group(emulator: Emulator, emulator_http: httpx.Client) -> None:
    refs = [{"id": emulator.state.add_contact(f"u{i}")["id"]} for i in range(1001)]
    assert "1000" in assert_error(
        emulator_http.post("/groups", json={"name": "big", "contacts": refs}), 400
    )
    r = emulator_http.post("/groups", json={"name": "big", "contacts": refs[:1000]})
    assert r.status_code == 201 and len(r.json()["contacts"]) == 1000
    assert "1000" in assert_error(
        emulator_http.put(f"/groups/{r.json()['id']}", json={"contacts": refs}), 400
    )


def test_form_body_is_accepted_for_scalar_fields(emulator_http: httpx.Client) -> None:
    r = emulator_http.post(
        "/groups", data={"name": "Plaza Hotel", "description": "World-renowned."}
    )
    assert r.status_code == 201
    assert r.json()["description"] == "World-renowned."
    gid = r.json()["id"]
    r = emulator_http.put(f"/groups/{gid}", data={"description": "The finest in New York."})
    assert r.json()["description"] == "The finest in New York."
    assert r.json()["name"] == "Plaza Hotel"
    assert "JSON" in assert_error(emulator_http.put(f"/groups/{gid}", data={"contacts": "a"}), 400)
    assert_error(emulator_http.post("/groups", data={"description": "no name"}), 400)


def test_form_archived_at(emulator_http: httpx.Client) -> None:
    gid = emulator_http.post("/groups", data={"name": "g"}).json()["id"]
    assert (
        emulator_http.put(f"/groups/{gid}", data={"archived_at": "1700000000"}).json()[
            "archived_at"
        ]
        == 1_700_000_000
    )
    assert (
        emulator_http.put(f"/groups/{gid}", data={"archived_at": ""}).json()["archived_at"] is None
    )
    assert_error(emulator_http.put(f"/groups/{gid}", data={"archived_at": "soon"}), 400)


@pytest.mark.parametrize("content", [b"{not json", b'"a string"', b"[1, 2]", b"\xff\xfe"])
def test_malformed_or_non_object_json_is_400(emulator_http: httpx.Client, content: bytes) -> None:
    r = emulator_http.post("/groups", content=content, headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_multipart_body_is_400(emulator_http: httpx.Client) -> None:
    r = emulator_http.post("/groups", files={"name": (None, "x")})
    assert "multipart" in assert_error(r, 400)


# --- groups: retrieve, update, delete ------------------------------------------------------


def test_get_unknown_group_is_404(emulator_http: httpx.Client) -> None:
    assert "nope" in assert_error(emulator_http.get("/groups/nope"), 404)


def test_put_is_partial(emulator: Emulator, emulator_http: httpx.Client) -> None:
    g = emulator.state.add_group("CS", members=["ada"], description="d", avatar_url="a")
    r = emulator_http.put(f"/groups/{g['id']}", json={"description": "new"})
    assert r.status_code == 200
    assert r.json() == {**g, "description": "new"}
    r = emulator_http.put(f"/groups/{g['id']}", json={})
    assert r.json() == {**g, "description": "new"}
    r = emulator_http.put(f"/groups/{g['id']}", json={"name": "CS 2", "avatar_url": None})
    assert r.json() == {**g, "description": "new", "name": "CS 2", "avatar_url": None}
    assert emulator_http.get(f"/groups/{g['id']}").json() == r.json()


def test_put_contacts_replaces_the_whole_list(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    g = emulator.state.add_group("CS", members=["ada", "bob"])
    emulator.state.add_contact("cy")
    r = emulator_http.put(f"/groups/{g['id']}", json={"contacts": [{"username": "cy"}]})
    assert [c["username"] for c in r.json()["contacts"]] == ["cy"]
    r = emulator_http.put(f"/groups/{g['id']}", json={"contacts": []})
    assert r.json()["contacts"] == []


def test_put_unknown_contact_changes_nothing(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    g = emulator.state.add_group("CS", members=["ada"])
    r = emulator_http.put(
        f"/groups/{g['id']}", json={"name": "renamed", "contacts": [{"username": "ghost"}]}
    )
    assert "ghost" in assert_error(r, 400)
    assert emulator.state.get(g["id"]) == g


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": None},
        {"name": "y" * 101},
        {"description": 1},
        {"contacts": {"username": "a"}},
        {"archived_at": "yesterday"},
        {"archived_at": True},
        {"archived_at": -5},
        {"archived_at": 1.5},
    ],
)
def test_put_validation(emulator: Emulator, emulator_http: httpx.Client, body: dict) -> None:
    g = emulator.state.add_group("CS")
    assert_error(emulator_http.put(f"/groups/{g['id']}", json=body), 400)
    assert emulator.state.get(g["id"]) == g


def test_put_unknown_group_is_404(emulator_http: httpx.Client) -> None:
    assert_error(emulator_http.put("/groups/nope", json={"name": "x"}), 404)


def test_archive_and_restore_via_put(emulator: Emulator, emulator_http: httpx.Client) -> None:
    g = emulator.state.add_group("CS")
    other = emulator.state.add_group("Other")
    r = emulator_http.put(f"/groups/{g['id']}", json={"archived_at": 1_700_000_000})
    assert r.json()["archived_at"] == 1_700_000_000

    def ids(archived: str | None) -> list[str]:
        params = {} if archived is None else {"archived": archived}
        return [x["id"] for x in emulator_http.get("/groups", params=params).json()["data"]]

    assert ids(None) == ids("false") == [other["id"]]
    assert ids("true") == [g["id"]]
    assert emulator_http.get(f"/groups/{g['id']}").json()["archived_at"] == 1_700_000_000

    r = emulator_http.put(f"/groups/{g['id']}", json={"archived_at": None})
    assert r.json()["archived_at"] is None
    assert ids("true") == []
    # Restored, it takes its old place: the order is by creation, not by restore time.
    assert ids(None) == [other["id"], g["id"]]


def test_archived_param_must_be_boolean(emulator_http: httpx.Client) -> None:
    assert_error(emulator_http.get("/groups", params={"archived": "maybe"}), 400)


def test_delete_answers_204_then_the_group_is_gone(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    g = emulator.state.add_group("CS")
    keep = emulator.state.add_group("Keep")
    emulator_http.post("/messages", json={"conversation_id": g["conversation_id"], "message": "hi"})
    emulator_http.post(
        "/messages", json={"conversation_id": keep["conversation_id"], "message": "k"}
    )
    r = emulator_http.delete(f"/groups/{g['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(emulator_http.get(f"/groups/{g['id']}"), 404)
    assert_error(emulator_http.delete(f"/groups/{g['id']}"), 404)
    assert emulator.state.get(g["id"]) is None
    # Messages go with the group (and its conversation is gone too).
    assert [m["message"] for m in emulator.state.messages()] == ["k"]
    r = emulator_http.post(
        "/messages", json={"conversation_id": g["conversation_id"], "message": "x"}
    )
    assert_error(r, 404)


def test_delete_can_answer_200_with_the_object_and_post_200(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    emulator.faults.update(delete_status=200, post_status=200)
    r = emulator_http.post("/groups", json={"name": "CS"})
    assert r.status_code == 200
    g = r.json()
    r = emulator_http.delete(f"/groups/{g['id']}")
    assert r.status_code == 200 and r.json() == g


# --- contacts --------------------------------------------------------------------------------


def test_contacts_list_and_retrieve(emulator: Emulator, emulator_http: httpx.Client) -> None:
    ada = emulator.state.add_contact("ada", display_name="Ada", phone_number="+1555")
    bob = emulator.state.add_contact("bob")
    r = emulator_http.get("/contacts")
    assert r.json() == {"has_more": False, "data": [bob, ada]}
    assert set(ada) == CONTACT_FIELDS
    assert emulator_http.get(f"/contacts/{ada['id']}").json() == ada
    assert_error(emulator_http.get("/contacts/nope"), 404)


def test_usernames_are_case_sensitive(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.state.add_contact("Ada")
    emulator.state.add_contact("ada")
    r = emulator_http.post("/groups", json={"name": "x", "contacts": [{"username": "ADA"}]})
    assert "ADA" in assert_error(r, 400)
    r = emulator_http.post("/groups", json={"name": "x", "contacts": [{"username": "Ada"}]})
    assert [c["username"] for c in r.json()["contacts"]] == ["Ada"]


# --- messages --------------------------------------------------------------------------------


def test_post_message_to_a_group_conversation(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    g = emulator.state.add_group("CS")
    r = emulator_http.post(
        "/messages", json={"conversation_id": g["conversation_id"], "message": "Welcome!"}
    )
    assert r.status_code == 201
    m = r.json()
    assert m["conversation_id"] == g["conversation_id"] and m["message"] == "Welcome!"
    assert re.fullmatch(r"[A-Za-z0-9]{16}", m["id"]) and type(m["created_at"]) is int
    assert emulator.state.messages(g["conversation_id"]) == [m]


def test_post_message_to_a_contact_by_form(emulator: Emulator, emulator_http: httpx.Client) -> None:
    ada = emulator.state.add_contact("ada")
    r = emulator_http.post(
        "/messages", data={"conversation_id": ada["conversation_id"], "message": "hi"}
    )
    assert r.status_code == 201 and r.json()["message"] == "hi"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"conversation_id": "nope", "message": "hi"}, 404),
        ({"message": "hi"}, 400),
        ({"conversation_id": "x"}, 400),
        ({"conversation_id": "x", "message": ""}, 400),
    ],
)
def test_post_message_errors(emulator_http: httpx.Client, body: dict, status: int) -> None:
    assert_error(emulator_http.post("/messages", json=body), status)


# --- auth and routing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic dGVzdC10b2tlbg=="},
        {"Authorization": "test-token"},
        {"Authorization": "Bearer"},
    ],
)
def test_bad_or_missing_token_is_401(emulator: Emulator, headers: dict) -> None:
    with httpx.Client(base_url=emulator.base_url, headers=headers, verify=False) as anonymous:
        for method, path in [("GET", "/groups"), ("POST", "/groups"), ("GET", "/nope")]:
            assert_error(anonymous.request(method, path, json={"name": "x"}), 401)
    assert emulator.state.groups(archived=None) == []


def test_bearer_scheme_is_case_insensitive(emulator_http: httpx.Client) -> None:
    r = emulator_http.get("/groups", headers={"Authorization": "bearer test-token"})
    assert r.status_code == 200


def test_unknown_paths_and_methods_answer_json(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    assert_error(emulator_http.get("/nope"), 404)
    assert_error(emulator_http.get("/groups/a/b"), 404)
    assert_error(emulator_http.get(emulator.base_url.removesuffix("/v1") + "/elsewhere"), 404)
    assert_error(emulator_http.patch("/groups"), 405)
    assert_error(emulator_http.delete("/contacts"), 405)


def test_token_is_not_in_any_repr(emulator: Emulator) -> None:
    assert "test-token" not in repr(emulator.app.token)
    assert "test-admin-token" not in repr(emulator.admin_token)
