"""The CLI against an API whose answers break the contract: a clear error, and nothing written.

`plan` exits 1 naming the endpoint, page and field, without a traceback; `apply` and
`run --once` stop before any write: the emulator sees no POST, PUT or DELETE and the journal
records no change and no managed group, only the failed run and why.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from groupsync.emulator import Emulator
from test_cli_e2e import groupsync, groupsync_process, spec_file, write_config, writes


def config_with_work_to_do(emulator: Emulator, tmp_path: Path) -> Path:
    """A spec whose plan creates one group and renames another, were the answers sound."""
    emulator.state.add_contact("ada")
    emulator.state.add_group("Old name", id="G0000000000000001", members=["ada"])
    spec = {
        "chess": {"name": "Chess", "members": ["ada"]},
        "old": {"id": "G0000000000000001", "name": "New name", "members": ["ada"]},
    }
    return write_config(tmp_path, emulator, spec_file(tmp_path, spec))


def journal_rows(tmp_path: Path) -> dict[str, list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        return {
            "runs": db.execute("SELECT outcome, error FROM runs").fetchall(),
            "changes": db.execute("SELECT * FROM changes").fetchall(),
            "groups": db.execute("SELECT * FROM groups").fetchall(),
        }


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"archived_at": "yesterday"},
            'archived_at: expected an integer Unix time or null, got "yesterday"',
        ),
        ({"id": 42}, "id: expected a non-empty string, got 42"),
        ({"name": None}, "name: expected a string, got null"),
    ],
    ids=["archived_at yesterday", "integer id", "null name"],
)
def test_plan_fails_clearly_on_a_wrong_type(
    emulator: Emulator, tmp_path: Path, fields: dict[str, object], problem: str
) -> None:
    config = config_with_work_to_do(emulator, tmp_path)
    emulator.faults.update(override_fields=fields)
    result = groupsync("plan", "-o", str(tmp_path / "plan.json"), config=config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"Error: GET /groups page 1: data[0].{problem}\n"
    assert result.stdout == "" and not (tmp_path / "plan.json").exists()
    assert writes(emulator) == 0


@pytest.mark.parametrize(
    "command", [("apply", "--yes"), pytest.param(("run", "--once"), marks=pytest.mark.slow)]
)
@pytest.mark.parametrize(
    "faults",
    [{"override_fields": {"archived_at": False}}, {"duplicate_ids": True}],
    ids=["archived_at false", "duplicate ids"],
)
def test_apply_and_run_write_nothing_on_a_malformed_answer(
    emulator: Emulator, tmp_path: Path, command: tuple[str, ...], faults: dict[str, object]
) -> None:
    for i in range(120):  # two pages, so a page can repeat its cursor's item
        emulator.state.add_group(f"Bystander {i}")
    config = config_with_work_to_do(emulator, tmp_path)
    emulator.faults.update(**faults)
    # The daemon outlives a call and sets up logging for its process: it gets a process.
    run = groupsync_process if command[0] == "run" else groupsync
    result = run(*command, config=config)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    expected = "page 2: data[0].id" if "duplicate_ids" in faults else "archived_at: expected"
    assert expected in output
    assert writes(emulator) == 0
    rows = journal_rows(tmp_path)
    assert rows["changes"] == [] and rows["groups"] == []
    [(outcome, error)] = rows["runs"]
    assert outcome == "error" and expected in error
