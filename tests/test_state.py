"""State snapshots: a real journal's state out as JSON and back, and untrusted ones refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from groupsync import state
from groupsync.journal import Journal
from groupsync.outcomes import RunOutcome
from groupsync.plan import AppliedState
from groupsync.state import SnapshotError, load_snapshot, read_state, snapshot


def _journal_with_state(path: Path) -> Journal:
    journal = Journal.open(path)
    roster = {"name": "sis", "kind": "oneroster", "digest": "d", "groups": 12, "members": 340}
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="s", rosters=[roster])
    journal.set_managed(
        "chess",
        "g_1",
        AppliedState("Chess Club", "Wed 4pm", None, frozenset({"bo", "ada"}), False),
    )
    hiking = AppliedState("Hiking", None, "https://x/a.png", None, True)
    journal.set_managed("hiking", "g_2", hiking)
    journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={})
    journal.start_run(trigger="schedule", mode="apply", spec_digest="s")
    return journal


@pytest.fixture
def journal(tmp_path: Path):
    with _journal_with_state(tmp_path / "groupsync.db") as j:
        yield j


def _document(journal: Journal) -> dict[str, Any]:
    return json.loads(state.dumps(snapshot(journal)))


def test_snapshot_round_trips_what_the_plan_reads(journal: Journal) -> None:
    data = state.dumps(snapshot(journal))
    loaded = load_snapshot(data, "test.json")
    assert loaded.line.text() == "State: snapshot test.json (run 2, 2 managed)"
    here = read_state(journal)
    assert here.line.text() == f"State: journal {journal.path} (run 2, 2 managed)"
    assert (loaded.run_id, loaded.managed, loaded.rosters) == (
        here.run_id,
        here.managed,
        here.rosters,
    )
    assert loaded.managed == journal.managed()
    assert loaded.rosters == journal.last_roster_counts()
    assert loaded.run_id == 2 and loaded.managed_count == 2
    doc = json.loads(data)
    assert doc["format"] == "groupsync-state" and doc["format_version"] == 1
    assert doc["groups"][0] == {
        "key": "chess",
        "group_id": "g_1",
        "applied": {
            "name": "Chess Club",
            "description": "Wed 4pm",
            "avatar_url": None,
            "members": ["ada", "bo"],
            "archived": False,
        },
    }
    assert doc["rosters"] == [{"name": "sis", "groups": 12, "members": 340}]


def test_same_journal_same_bytes(journal: Journal) -> None:
    tricky = AppliedState('Say "hi" – ü', "line\nbreak \\ \u2028", None, frozenset({"é"}), False)
    journal.set_managed("zz", "g_3", tricky)
    spliced = state.snapshot_bytes(journal)
    assert spliced == state.snapshot_bytes(journal)
    assert spliced == state.dumps(state.to_snapshot(read_state(journal)))  # the slow way
    assert load_snapshot(spliced, "x").managed["zz"].applied == tricky


def test_empty_journal_has_no_run(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as journal:
        loaded = load_snapshot(state.dumps(snapshot(journal)), "x")
    assert (loaded.run_id, loaded.managed_count, dict(loaded.rosters)) == (None, 0, {})


def _refusal(doc: Any, **kwargs: Any) -> str:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(data, "https://h/state", **kwargs)
    message = str(caught.value)
    assert message.startswith("state snapshot https://h/state")
    return message


def test_newer_format_is_refused_before_its_fields_are_judged(journal: Journal) -> None:
    doc = _document(journal) | {"format_version": 2, "something_new": {}}
    message = _refusal(doc)
    assert "format_version 2, newer than this groupsync" in message
    assert "upgrade groupsync" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"run_id": "42"}, "run_id: input should be a valid integer"),
        ({"managed_count": True}, "managed_count: input should be a valid integer"),
        ({"token": "x"}, "token: unknown field"),
        ({"format_version": 0}, "format_version: expected a whole number"),
        ({"format": "groupsync-plan"}, "not a groupsync state snapshot"),
        ({"managed_count": 3}, "managed_count is 3 but it lists 2 groups"),
    ],
)
def test_bad_top_level_fields_are_named(
    journal: Journal, change: dict[str, Any], expected: str
) -> None:
    assert expected in _refusal(_document(journal) | change)


@pytest.mark.parametrize(
    ("index", "field", "value", "expected"),
    [
        (1, "archived", "yes", "groups[1].applied.archived (key 'hiking'): expected true or"),
        (0, "members", ["u"] * 1001, "groups[0].applied.members (key 'chess'): expected null or"),
        (0, "members", ["ada", 7], "groups[0].applied.members[1] (key 'chess'): expected a str"),
        (0, "members", ["ada", ""], "groups[0].applied.members[1] (key 'chess'): expected a"),
        (0, "name", "", "groups[0].applied.name (key 'chess'): expected a string of 1 to"),
        (0, "description", "d" * 5000, "groups[0].applied.description (key 'chess'): expected"),
        (0, "colour", "red", "groups[0].applied (key 'chess'): unknown field colour"),
    ],
)
def test_bad_group_names_the_field_and_the_key(
    journal: Journal, index: int, field: str, value: Any, expected: str
) -> None:
    doc = _document(journal)
    doc["groups"][index]["applied"][field] = value
    assert expected in _refusal(doc)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ([], "groups[0]: expected an object"),
        ({"key": "a", "group_id": "g"}, "groups[0] (key 'a'): missing applied"),
        ({"key": 1, "group_id": "g", "applied": None}, "groups[0].key: expected a string"),
        ({"key": "a", "group_id": "g", "applied": []}, "groups[0].applied (key 'a'): expected"),
    ],
)
def test_bad_group_entries_are_named(journal: Journal, entry: Any, expected: str) -> None:
    doc = _document(journal)
    doc["groups"][0] = entry
    assert expected in _refusal(doc)


def test_keys_and_group_ids_must_be_one_to_one(journal: Journal) -> None:
    doc = _document(journal)
    doc["groups"][1]["group_id"] = "g_1"
    assert "group 'g_1' is under key 'chess' and 'hiking'" in _refusal(doc)
    doc = _document(journal)
    doc["groups"][1]["key"] = "chess"
    assert "groups[1]: key 'chess' twice" in _refusal(doc)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"format": "groupsync-state", "format": "x"}', "'format' is written twice"),
        (b'{"run_id": NaN}', "NaN is not a JSON number"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"{", "not valid JSON"),
        (b"[]", "not a groupsync state snapshot"),
    ],
)
def test_malformed_bytes_are_refused(data: bytes, expected: str) -> None:
    assert expected in _refusal(data)


def test_size_is_bounded_before_parsing(journal: Journal) -> None:
    data = state.dumps(snapshot(journal))
    assert "over the limit of 100" in _refusal(data, max_bytes=100)
