"""The CLI through its entry point against the emulator over HTTP: in this process, and as a real
`python -m groupsync` process where only a whole process shows it (a terminal, what reaches any
output). The demo's story is told in test_cli_first_use."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

import helpers
from groupsync.emulator import Emulator
from helpers import Terminal, run_cli

TOKEN = "test-token"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WRITES = ("POST", "PUT", "DELETE")


def write_config(tmp_path: Path, emu: Emulator, spec: Path, **extra: object) -> Path:
    config = tmp_path / "groupsync.yaml"
    settings: dict[str, object] = {
        "api": {"base_url": emu.base_url, "token_env": "ECAMPUS_TOKEN", "max_requests_per_s": 200},
        "spec": {"path": str(spec)},
        "journal": {"path": str(tmp_path / "journal.db")},
        **extra,
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def groupsync(
    *args: str, config: Path | None = None, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    """The CLI through its entry point, in this process, with `--config config` at the end."""
    return run_cli(*args, *config_args(config), token=token)


def groupsync_process(
    *args: str, config: Path | None = None, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    """The same as a real `python -m groupsync` process: for what only a whole process shows
    (all it prints, log lines included) and for `run`, which outlives a call."""
    return helpers.groupsync(*args, *config_args(config), token=token)


def config_args(config: Path | None) -> list[str]:
    return ["--config", str(config)] if config is not None else []


def writes(emu: Emulator) -> int:
    return sum(emu.count(method=m) for m in WRITES)


def spec_file(tmp_path: Path, groups: dict[str, object]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def campus(seeded_emulator: Emulator, tmp_path: Path) -> tuple[Emulator, Path]:
    return seeded_emulator, write_config(tmp_path, seeded_emulator, EXAMPLES / "groups")


def test_plan_is_a_dry_run_then_apply_converges(campus: tuple[Emulator, Path]) -> None:
    emu, config = campus
    planned = groupsync("plan", "--detailed-exitcode", config=config)
    assert planned.returncode == 2, planned.stderr
    assert "+ create" in planned.stdout and "cs301" in planned.stdout
    assert writes(emu) == 0

    applied = groupsync("apply", "--yes", config=config)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "failed 0" in applied.stdout

    again = groupsync("plan", "--detailed-exitcode", config=config)
    assert again.returncode == 0, again.stdout + again.stderr
    names = [g["name"] for g in emu.state.groups(archived=False)]
    assert len(names) == len(set(names)), "a group was created twice"


def test_apply_refuses_without_yes_off_a_terminal(campus: tuple[Emulator, Path]) -> None:
    emu, config = campus
    result = groupsync("apply", config=config)
    assert result.returncode == 1
    assert "--yes" in result.stderr
    assert writes(emu) == 0


def test_saved_plan_applies_while_fresh_and_is_refused_when_stale(
    campus: tuple[Emulator, Path], tmp_path: Path
) -> None:
    emu, config = campus
    saved = tmp_path / "plan.json"
    assert groupsync("plan", "-o", str(saved), config=config).returncode == 0

    # Someone renames a touched group by hand after the plan was reviewed.
    touched = json.loads(saved.read_text())["fingerprints"]
    gid = sorted(touched)[0]
    emu.state.update_group(gid, {"name": "renamed by hand"})
    stale = groupsync("apply", "--yes", str(saved), config=config)
    assert stale.returncode == 1
    assert "stale" in stale.stderr and gid in stale.stderr
    assert writes(emu) == 0  # the hand edit went straight to the emulator state

    assert groupsync("plan", "-o", str(saved), config=config).returncode == 0
    fresh = groupsync("apply", "--yes", str(saved), config=config)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr


def test_checksum_must_match_the_fresh_plan(campus: tuple[Emulator, Path]) -> None:
    emu, config = campus
    result = groupsync("apply", "--yes", "--checksum", "0" * 64, config=config)
    assert result.returncode == 1
    assert "checksum" in result.stderr
    assert writes(emu) == 0

    plan = json.loads(groupsync("plan", "--format", "json", config=config).stdout)
    ok = groupsync("apply", "--yes", "--checksum", plan["checksum"], config=config)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_partial_failure_applies_the_others_and_names_the_key(
    emulator: Emulator, tmp_path: Path
) -> None:
    for name in ("ada", "grace"):
        emulator.state.add_contact(name)
    spec = spec_file(
        tmp_path,
        {
            "good": {"name": "Good", "members": ["ada", "grace"]},
            "typo": {"name": "Typo", "members": ["ada", "gracee"]},
        },
    )
    config = write_config(tmp_path, emulator, spec)
    result = groupsync("apply", "--yes", config=config)
    assert result.returncode == 1
    assert "typo" in result.stdout + result.stderr
    assert [g["name"] for g in emulator.state.groups()] == ["Good"]


def test_safety_refusal_writes_nothing(emulator: Emulator, tmp_path: Path) -> None:
    groups = {f"g{i}": {"name": f"Group {i}"} for i in range(12)}
    config = write_config(tmp_path, emulator, spec_file(tmp_path, groups))
    assert groupsync("apply", "--yes", config=config).returncode == 0
    before = writes(emulator)

    spec_file(tmp_path, {"g0": {"name": "Group 0"}})  # 11 of 12 would be archived
    refused = groupsync("apply", "--yes", config=config)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "would archive 11 of 12" in refused.stdout + refused.stderr
    assert writes(emulator) == before
    assert groupsync("plan", "--detailed-exitcode", config=config).returncode == 3


def test_export_then_plan_changes_nothing(seeded_emulator: Emulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, seeded_emulator, tmp_path / "exported.yaml")
    exported = groupsync("export", "-o", str(tmp_path / "exported.yaml"), config=config)
    assert exported.returncode == 0, exported.stderr
    text = groupsync("plan", "--detailed-exitcode", config=config)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "The account itself does not change" in text.stdout
    plan = json.loads(groupsync("plan", "--format", "json", config=config).stdout)
    actions = {c["action"] for c in plan["plan"]["changes"]}
    assert actions <= {"adopt"}
    assert all(not c["fields"] and c["members"] is None for c in plan["plan"]["changes"])
    assert writes(seeded_emulator) == 0


def test_noop_plan_costs_exactly_the_list_calls(emulator: Emulator, tmp_path: Path) -> None:
    emulator.state.add_contact("ada")
    for i in range(1050):
        emulator.state.add_group(f"Active {i}", members=["ada"])
    for i in range(130):
        emulator.state.add_group(f"Archived {i}", archived=True)
    config = write_config(tmp_path, emulator, tmp_path / "spec.yaml")
    assert (
        groupsync(
            "export", "--include-archived", "-o", str(tmp_path / "spec.yaml"), config=config
        ).returncode
        == 0
    )
    assert groupsync("apply", "--yes", config=config).returncode == 0  # records the adoptions
    emulator.reset_counters()

    result = groupsync("plan", "--detailed-exitcode", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert emulator.count(method="GET", path="/v1/groups") == 11 + 2
    assert emulator.count() == 13


def test_lock_contention_exits_at_once(campus: tuple[Emulator, Path], tmp_path: Path) -> None:
    from groupsync.journal import Journal

    _, config = campus
    with Journal.open(tmp_path / "journal.db") as journal, journal.writer_lock():
        result = groupsync("apply", "--yes", config=config)
    assert result.returncode == 1
    assert "another groupsync" in result.stderr


def test_history_tells_what_changed_and_why(campus: tuple[Emulator, Path]) -> None:
    _, config = campus
    assert groupsync("apply", "--yes", config=config).returncode == 0
    text = groupsync("history", config=config)
    assert text.returncode == 0
    assert "manual apply  applied" in text.stdout
    assert "create cs301 (spec)" in text.stdout
    runs = json.loads(groupsync("history", "--json", "--group", "cs301", config=config).stdout)
    assert [c["key"] for c in runs[0]["changes"]] == ["cs301"]


@pytest.mark.slow
def test_token_never_leaves_the_process(campus: tuple[Emulator, Path], tmp_path: Path) -> None:
    _, config = campus
    secret = "s3cr3t-T0KEN-visible-nowhere"
    refused = groupsync_process("plan", config=config, token=secret)
    assert refused.returncode == 1
    assert "token" in refused.stderr.lower()

    saved = tmp_path / "plan.json"
    outputs = [
        refused,
        groupsync_process("plan", "-o", str(saved), config=config),
        groupsync_process("apply", "--yes", config=config),
        groupsync_process("history", "--json", config=config),
    ]
    for out in outputs:
        assert TOKEN not in out.stdout + out.stderr
        assert secret not in out.stdout + out.stderr
    for path in (saved, tmp_path / "journal.db"):
        data = path.read_bytes()
        assert TOKEN.encode() not in data and secret.encode() not in data
    rows = sqlite3.connect(tmp_path / "journal.db").execute("SELECT count(*) FROM runs").fetchone()
    assert rows[0] >= 1


def test_usage_error_never_exits_2(tmp_path: Path) -> None:
    result = groupsync("plan", "--format", "yaml")
    assert result.returncode == 64
    assert "Traceback" not in result.stderr


def run_on_a_terminal(args: list[str], answer: str, env: dict[str, str]) -> tuple[int, str]:
    """Run groupsync with a pseudo-terminal as stdin/stdout, typing `answer` at the prompt."""
    term = Terminal(args, env)
    try:
        term.wait_for(b"Apply these changes?", timeout=60)
        term.type(answer.encode() + b"\n")
        code = term.exit_code(60)
    finally:
        term.close()
    assert code is not None, term.text
    return code, term.text


@pytest.mark.parametrize(("answer", "code"), [("n", 0), ("y", 0)])
def test_apply_on_a_terminal_asks_first(
    campus: tuple[Emulator, Path], answer: str, code: int
) -> None:
    emu, config = campus
    env = {**os.environ, "ECAMPUS_TOKEN": TOKEN, "NO_COLOR": "1"}
    rc, out = run_on_a_terminal(["apply", "--config", str(config)], answer, env)
    assert rc == code, out
    assert "Apply these changes?" in out
    if answer == "n":
        assert "Nothing applied." in out
        assert writes(emu) == 0
    else:
        assert "Applied 11, failed 0" in out
        assert writes(emu) > 0


def test_an_empty_checksum_approves_nothing(campus: tuple[Emulator, Path]) -> None:
    emu, config = campus
    result = groupsync("apply", "--yes", "--checksum", "", config=config)
    assert result.returncode == 1
    assert "checksum" in result.stderr
    assert writes(emu) == 0


def test_a_stale_saved_plan_is_refused_even_when_nothing_is_left_to_do(
    campus: tuple[Emulator, Path], tmp_path: Path
) -> None:
    _, config = campus
    saved = tmp_path / "plan.json"
    assert groupsync("plan", "-o", str(saved), config=config).returncode == 0
    assert groupsync("apply", "--yes", config=config).returncode == 0
    again = groupsync("apply", "--yes", str(saved), config=config)
    assert again.returncode == 1
    assert "stale" in again.stderr


@pytest.mark.parametrize(
    "content",
    ['{"format": "groupsync-plan", "format_version": 1}', "not json", '{"format": "other"}'],
)
def test_a_damaged_plan_file_is_a_clear_error(
    campus: tuple[Emulator, Path], tmp_path: Path, content: str
) -> None:
    emu, config = campus
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = groupsync("apply", "--yes", str(bad), config=config)
    assert result.returncode == 1
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    assert writes(emu) == 0


def test_unwritable_output_is_a_clear_error(campus: tuple[Emulator, Path]) -> None:
    _, config = campus
    for command in ("plan", "export"):
        result = groupsync(command, "-o", "/nonexistent/dir/out", config=config)
        assert result.returncode == 1, command
        assert "cannot write /nonexistent/dir/out" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_base_url_with_a_bad_port_fails_validation(tmp_path: Path) -> None:
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        yaml.safe_dump(
            {"api": {"base_url": "http://127.0.0.1:99999/v1"}, "spec": {"path": "spec.yaml"}}
        )
    )
    spec_file(tmp_path, {"a": {"name": "A"}})
    result = groupsync("validate", config=config)
    assert result.returncode == 1
    assert "groupsync.yaml:2:13: api.base_url" in result.stderr and "port 99999" in result.stderr
