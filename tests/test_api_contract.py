"""Malformed answers fail the read, naming the endpoint, the page and the field.

The client against the emulator over real HTTP, its `override_fields` and `duplicate_ids`
faults garbling the answers; the envelope and message checks on `Contract` directly.
"""

from __future__ import annotations

from typing import Any

import pytest

from groupsync.api import AmbiguousWrite, Client, MalformedAnswer, MalformedWrite
from groupsync.contract import Contract, Malformed
from groupsync.emulator import Emulator, serve_emulator
from groupsync.secret import MASK
from helpers import api_client

TOKEN = "test-token"


def connect(emulator: Emulator) -> Client:
    return api_client(emulator.base_url, TOKEN, max_requests_per_s=1000, timeout_s=5)


async def listing_error(emulator: Emulator, **faults: Any) -> MalformedAnswer:
    emulator.faults.update(**faults)
    async with connect(emulator) as client:
        with pytest.raises(MalformedAnswer) as caught:
            await client.list_all_groups()
    return caught.value


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "shown"), [("yesterday", '"yesterday"'), (False, "false"), (1.5, "1.5")]
)
async def test_a_bad_archived_at_names_endpoint_page_and_item(
    emulator: Emulator, value: object, shown: str
) -> None:
    for i in range(300):
        emulator.state.add_group(f"Archived {i}", archived=True)
    async with connect(emulator) as client:
        listed = await client.list_groups(archived=True)
    target = listed[217].id  # page 3, item 17, in the server's order

    error = await listing_error(
        emulator, override_fields={"archived_at": value}, override_ids=[target]
    )
    assert str(error) == (
        f"GET /groups?archived=true page 3: data[17].archived_at: expected an integer Unix time"
        f" or null, got {shown}"
    )
    assert error.page == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": None}, "data[0].name: expected a string, got null"),
        ({"name": 42}, "data[0].name: expected a string, got 42"),
        ({"id": 42}, "data[0].id: expected a non-empty string, got 42"),
        ({"id": ""}, 'data[0].id: expected a non-empty string, got ""'),
        ({"created_at": "2024-01-01"}, 'data[0].created_at: expected an integer Unix time, got "'),
        ({"description": 7}, "data[0].description: expected a string or null, got 7"),
        ({"contacts": None}, "data[0].contacts: expected a list, got null"),
        ({"contacts": "ada"}, 'data[0].contacts: expected a list, got "ada"'),
        ({"contacts": ["ada"]}, 'data[0].contacts[0]: expected an object, got "ada"'),
        (
            {"contacts": [{"id": "c1", "username": None}]},
            "data[0].contacts[0].username: expected a string, got null",
        ),
    ],
)
async def test_each_wrong_type_in_a_group_is_named(
    emulator: Emulator, fields: dict[str, object], problem: str
) -> None:
    emulator.state.add_group("Chess", members=["ada"])
    error = await listing_error(emulator, override_fields=fields)
    assert str(error).startswith(f"GET /groups page 1: {problem}")


def test_a_missing_field_is_named() -> None:
    with pytest.raises(Malformed, match=r"^name: expected a string, got nothing$"):
        Contract(str).group({"id": "g1", "contacts": [], "created_at": 1})


GOOD_CONTACT = {"id": "c1", "username": "ada", "display_name": "Ada"}


@pytest.mark.parametrize(
    ("contact", "problem"),
    [
        ("ada", 'contacts[2]: expected an object, got "ada"'),
        ({"username": "cy"}, "contacts[2].id: expected a non-empty string, got nothing"),
        ({**GOOD_CONTACT, "id": ""}, 'contacts[2].id: expected a non-empty string, got ""'),
        ({**GOOD_CONTACT, "id": 7}, "contacts[2].id: expected a non-empty string, got 7"),
        ({"id": "c3"}, "contacts[2].username: expected a string, got nothing"),
        ({**GOOD_CONTACT, "username": True}, "contacts[2].username: expected a string, got true"),
        (
            {**GOOD_CONTACT, "display_name": 7},
            "contacts[2].display_name: expected a string or null, got 7",
        ),
    ],
)
def test_each_bad_contact_of_a_group_is_named_at_its_place(contact: object, problem: str) -> None:
    contacts = [GOOD_CONTACT, {"id": "c2", "username": "bob"}, contact, GOOD_CONTACT]
    with pytest.raises(Malformed) as caught:
        Contract(str).group({"id": "g1", "name": "Chess", "contacts": contacts, "created_at": 1})
    assert str(caught.value) == problem


def test_a_groups_contacts_become_its_members_sorted_and_each_once() -> None:
    contacts = [
        {"id": "c2", "username": "bob", "display_name": None},
        {"id": "c1", "username": "ada", "extra": [1]},
        GOOD_CONTACT,
    ]
    group = Contract(str).group(
        {"id": "g1", "name": "Chess", "contacts": contacts, "created_at": 1}
    )
    assert tuple(group.members) == ("ada", "bob")


@pytest.mark.anyio
async def test_the_same_id_on_two_pages_is_an_error_naming_it_and_both_pages(
    emulator: Emulator,
) -> None:
    for i in range(150):
        emulator.state.add_group(f"Group {i}")
    error = await listing_error(emulator, duplicate_ids=True)
    async with connect(emulator) as client:
        emulator.faults.duplicate_ids = False
        repeated = (await client.list_groups(archived=False))[99].id
    assert str(error) == (
        f'GET /groups page 2: data[0].id: "{repeated}" was already on page 1 (data[99]):'
        " a list names each object once"
    )


@pytest.mark.anyio
async def test_a_bad_contact_in_the_contact_list_is_named(emulator: Emulator) -> None:
    emulator.state.add_contact("ada")
    emulator.faults.update(override_fields={"username": 42})
    async with connect(emulator) as client:
        with pytest.raises(MalformedAnswer) as caught:
            await client.list_contacts()
    assert str(caught.value) == "GET /contacts page 1: data[0].username: expected a string, got 42"


@pytest.mark.anyio
async def test_single_objects_are_checked_and_a_garbled_create_stays_ambiguous(
    emulator: Emulator,
) -> None:
    gid = emulator.state.add_group("Chess")["id"]
    emulator.faults.update(override_fields={"archived_at": "yesterday"})
    async with connect(emulator) as client:
        with pytest.raises(MalformedAnswer) as read:
            await client.get_group(gid)
        with pytest.raises(MalformedAnswer) as updated:
            await client.update_group(gid, name="Chess Club")
        with pytest.raises(MalformedWrite) as created:
            await client.create_group(name="Go")
    assert str(read.value) == (
        f'GET /groups/{gid}: archived_at: expected an integer Unix time or null, got "yesterday"'
    )
    assert str(updated.value).startswith(f"PUT /groups/{gid}: archived_at: expected")
    assert isinstance(created.value, AmbiguousWrite)
    assert str(created.value).startswith("POST /groups: archived_at: expected")
    assert str(created.value).endswith("; the write may have been applied")


@pytest.mark.anyio
async def test_a_value_quoted_in_an_error_is_redacted_and_cut() -> None:
    secret = "sk-live-9f8e7d6c5b4a3210"
    with serve_emulator(token=secret) as emulator:
        emulator.state.add_group("Chess")
        emulator.faults.update(override_fields={"created_at": f"Bearer {secret} " + "x" * 200})
        async with api_client(emulator.base_url, secret, max_requests_per_s=1000) as client:
            with pytest.raises(MalformedAnswer) as caught:
                await client.list_groups(archived=False)
    text = str(caught.value)
    assert f'got "Bearer {MASK}' in text and text.endswith("…")
    assert secret[:8] not in text and len(text) < 200


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "expected an object, got []"),
        ({"data": []}, "has_more: expected true or false, got nothing"),
        ({"data": {}, "has_more": False}, "data: expected a list, got {}"),
        ({"data": [], "has_more": "no"}, 'has_more: expected true or false, got "no"'),
    ],
)
def test_a_page_envelope_off_the_contract(body: object, problem: str) -> None:
    with pytest.raises(Malformed) as caught:
        Contract(str).page(body)
    assert str(caught.value) == problem


def test_a_message_answer_is_checked() -> None:
    good = {"id": "m1", "conversation_id": "c1", "message": "hi", "created_at": 1, "extra": 1}
    assert Contract(str).message(good) is good
    with pytest.raises(Malformed, match=r"^created_at: expected an integer Unix time, got true$"):
        Contract(str).message({**good, "created_at": True})


def test_fields_groupsync_does_not_read_are_not_checked() -> None:
    group = Contract(str).group(
        {"id": "g1", "name": "Chess", "contacts": [], "created_at": 1, "color": 7, "nsfw": "?"}
    )
    assert (group.id, group.name, group.archived_at, group.description) == (
        "g1",
        "Chess",
        None,
        None,
    )
