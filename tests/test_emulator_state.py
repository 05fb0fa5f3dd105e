"""Emulator state: seeding from YAML/JSON/dicts, and a SQLite file that survives restarts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from groupsync.emulator import Emulator, EmulatorState, serve_emulator
from groupsync.emulator.state import SeedError

SEED_YAML = """\
contacts:
  - {username: prof.ada, display_name: Ada Lovelace}
  - {username: alan, display_name: Alan Turing, phone_number: "+44 1234"}
groups:
  - name: CS 101
    description: Intro
    avatar_url: https://example.org/cs.png
    members: [prof.ada, alan]
  - {name: Old Club, members: [alan], archived: true}
  - {name: Fixed, id: fixedId00000001}
"""


def client(emu: Emulator, token: str = "t") -> httpx.Client:
    return httpx.Client(
        base_url=emu.base_url, headers={"Authorization": f"Bearer {token}"}, verify=False
    )


def test_seed_from_yaml_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED_YAML)
    with serve_emulator(token="t", seed=seed) as emu, client(emu) as c:
        contacts = c.get("/contacts").json()["data"]
        assert [(x["username"], x["display_name"]) for x in contacts] == [
            ("alan", "Alan Turing"),
            ("prof.ada", "Ada Lovelace"),
        ]
        assert contacts[0]["phone_number"] == "+44 1234"
        active = c.get("/groups").json()["data"]
        assert [g["name"] for g in active] == ["Fixed", "CS 101"]  # last in the file is newest
        assert active[0]["id"] == "fixedId00000001"
        cs = active[1]
        assert (cs["description"], cs["avatar_url"]) == ("Intro", "https://example.org/cs.png")
        assert [m["username"] for m in cs["contacts"]] == ["prof.ada", "alan"]
        assert cs["contacts"][1] == contacts[0]
        archived = c.get("/groups", params={"archived": "true"}).json()["data"]
        assert [g["name"] for g in archived] == ["Old Club"]
        assert type(archived[0]["archived_at"]) is int


def test_seed_from_json_file_and_dict(tmp_path: Path) -> None:
    data = {"contacts": [{"username": "a"}], "groups": [{"name": "G", "members": ["a", "b"]}]}
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(data))
    for source in (seed, data):
        state = EmulatorState()
        state.load_seed(source)
        # A member the seed does not list as a contact is created: seeds stay short.
        assert [c["username"] for c in state.groups()[0]["contacts"]] == ["a", "b"]
        assert {c["username"] for c in state.contacts()} == {"a", "b"}


def test_empty_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "empty.yaml"
    seed.write_text("")
    state = EmulatorState()
    state.load_seed(seed)
    assert state.groups(archived=None) == [] and state.contacts() == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("groups:\n  - {name: ok}\n  - {description: no name}\n", "group #2"),
        ("groups:\n  - {name: ''}\n", "group #1"),
        ("groups:\n  - {name: x, members: alan}\n", "group #1"),
        ("groups:\n  - {name: a, id: same}\n  - {name: b, id: same}\n", "group #2"),
        ("contacts:\n  - {display_name: nobody}\n", "contact #1"),
        ("contacts:\n  - {username: a}\n  - {username: a}\n", "contact #2"),
        ("- just\n- a list\n", "mapping"),
        ("groups: [\n", "cannot read"),
    ],
)
def test_bad_seed_says_where(tmp_path: Path, text: str, needle: str) -> None:
    seed = tmp_path / "bad.yaml"
    seed.write_text(text)
    with pytest.raises(SeedError, match=needle):
        EmulatorState().load_seed(seed)


def test_missing_seed_file(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="cannot read"):
        EmulatorState().load_seed(tmp_path / "nope.yaml")


def test_sqlite_state_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    with serve_emulator(token="t", state_path=db) as emu, client(emu) as c:
        ada = emu.state.add_contact("ada", display_name="Ada")
        kept = c.post("/groups", json={"name": "Kept", "contacts": [{"username": "ada"}]}).json()
        archived = c.post("/groups", json={"name": "Archived"}).json()
        c.put(f"/groups/{archived['id']}", json={"archived_at": 1_700_000_000})
        gone = c.post("/groups", json={"name": "Gone"}).json()
        assert c.delete(f"/groups/{gone['id']}").status_code == 204
        renamed = c.put(f"/groups/{kept['id']}", json={"name": "Kept 2"}).json()
        message = c.post(
            "/messages", json={"conversation_id": kept["conversation_id"], "message": "hi"}
        ).json()
        before = {
            "active": c.get("/groups").json(),
            "archived": c.get("/groups", params={"archived": "true"}).json(),
            "contacts": c.get("/contacts").json(),
        }

    # A seed is for an empty state only: it must not be loaded over the saved one.
    with (
        serve_emulator(token="t", state_path=db, seed={"groups": [{"name": "x"}]}) as emu,
        client(emu) as c,
    ):
        assert c.get("/groups").json() == before["active"]
        assert before["active"]["data"] == [renamed]
        assert c.get("/groups", params={"archived": "true"}).json() == before["archived"]
        assert c.get("/contacts").json() == before["contacts"]
        assert c.get(f"/contacts/{ada['id']}").json() == ada
        assert c.get(f"/groups/{gone['id']}").status_code == 404
        assert emu.state.messages() == [message]
        new = c.post("/groups", json={"name": "New"}).json()
        assert [g["id"] for g in c.get("/groups").json()["data"]] == [new["id"], kept["id"]]

    reopened = EmulatorState(db)
    assert [g["name"] for g in reopened.groups()] == ["New", "Kept 2", "Archived"]
    reopened.close()


def test_sqlite_seed_then_reopen(tmp_path: Path) -> None:
    db = tmp_path / "seeded.db"
    state = EmulatorState(db)
    state.load_seed({"groups": [{"name": f"G{i}", "members": [f"u{i % 7}"]} for i in range(300)]})
    expected = state.groups()
    state.close()
    again = EmulatorState(db)
    assert again.groups() == expected and len(again.contacts()) == 7
    again.clear()
    again.close()
    assert EmulatorState(db).groups() == []


def test_seeded_emulator_fixture(seeded_emulator: Emulator) -> None:
    with client(seeded_emulator, "test-token") as c:
        groups = c.get("/groups", params={"limit": 100}).json()["data"]
        archived = c.get("/groups", params={"limit": 100, "archived": "true"}).json()["data"]
    assert groups or archived
