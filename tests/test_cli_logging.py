"""What a command says on stderr, through the CLI's entry point: each error once, the warnings
that matter, and with -v every request it makes, never the token (as a real `python -m
groupsync` process, whose every output line counts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupsync.emulator import Emulator, serve_emulator
from groupsync.journal import Journal
from groupsync.plan import Action, Cause, Change
from helpers import token_pieces
from test_cli_e2e import groupsync, groupsync_process, spec_file, write_config

CHESS = {"chess": {"name": "Chess", "members": ["ada"]}}


@pytest.fixture
def config(emulator: Emulator, tmp_path: Path) -> Path:
    emulator.state.add_contact("ada")
    return write_config(tmp_path, emulator, spec_file(tmp_path, CHESS))


def test_a_change_that_fails_is_said_once(emulator: Emulator, config: Path) -> None:
    emulator.faults.update(echo_auth="type", echo_auth_writes_only=True)  # the POST gets a 400
    result = groupsync("apply", "--yes", config=config)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Applied 0, failed 1, skipped 0" in result.stdout
    assert result.stderr.splitlines() == ["  chess: POST /groups: HTTP 400 Bearer **********: bad"]
    assert "outcome=" not in output  # the run's log line is the daemon's, not the command's


def test_a_run_that_cannot_start_says_why_once(emulator: Emulator, config: Path) -> None:
    result = groupsync("apply", "--yes", config=config, token="wrong-token")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: the eCampus API refused the token (HTTP 401): missing or invalid bearer token"
    ]


def test_a_group_with_an_error_is_listed_once_with_the_plan(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.state.add_contact("ada")
    spec = spec_file(tmp_path, {**CHESS, "ghost": {"name": "Ghost", "members": ["nobody"]}})
    result = groupsync("apply", "--yes", config=write_config(tmp_path, emulator, spec))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.count("unknown member 'nobody'") == 1
    assert "Applied 1, failed 0, skipped 0" in result.stdout
    assert result.stderr == (
        "1 group has an error and was left as it is (see Errors in the plan above).\n"
    )


def test_what_a_crashed_run_left_is_said_before_the_plan(config: Path, tmp_path: Path) -> None:
    with Journal.open(tmp_path / "journal.db") as journal:  # a run killed mid-create
        run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
        journal.begin_change(run, Change("chess", Action.CREATE, Cause.SPEC, "Chess"))
    result = groupsync("apply", "--yes", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "recovered: chess: crashed mid-create; no group found, will be created by the next plan"
    ]


@pytest.mark.slow  # three processes
def test_verbose_logs_every_request_and_never_the_token(tmp_path: Path) -> None:
    token = "sk-live-9f8e7d6c5b4a3210-AbCdEfGhIjKl"
    with serve_emulator(token=token) as emu:
        emu.state.add_contact("ada")
        config = write_config(tmp_path, emu, spec_file(tmp_path, CHESS))
        quiet = groupsync_process("plan", config=config, token=token)
        verbose = groupsync_process("-v", "plan", config=config, token=token)
        applied = groupsync_process("--verbose", "apply", "--yes", config=config, token=token)
    assert quiet.returncode == verbose.returncode == applied.returncode == 0, applied.stderr
    assert quiet.stderr == ""
    assert verbose.stdout == quiet.stdout
    requests = [line for line in verbose.stderr.splitlines() if " DEBUG groupsync.api: " in line]
    assert [line.split(": ", 1)[1].split(" in ")[0] for line in requests] == [
        "GET /groups -> 200",  # active, then archived
        "GET /groups -> 200",
        "GET /contacts -> 200",  # ada is in no group yet
    ]
    assert "POST /groups -> 201" in applied.stderr
    assert "INFO groupsync.run: run 1 outcome=applied" in applied.stderr
    for text in (verbose.stdout, verbose.stderr, applied.stdout, applied.stderr):
        assert token_pieces(text, token) == []
