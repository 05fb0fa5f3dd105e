"""`groupsync validate` and `groupsync schema` through the entry point, offline and online: in
this process, and as a real process where a token must reach no output at all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from groupsync.emulator import Emulator
from helpers import groupsync as groupsync_process
from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
SECRET = "tok-e5b1-NEVER-PRINT-ME"


def groupsync(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, token=token, cwd=ROOT)


def setup(tmp_path: Path, spec: str, base_url: str = "https://api.ecampus.chat/v1") -> Path:
    (tmp_path / "spec.yaml").write_text(spec, encoding="utf-8")
    config = tmp_path / "groupsync.yaml"
    config.write_text(f"api: {{base_url: '{base_url}'}}\nspec: {{path: spec.yaml}}\n", "utf-8")
    return config


REPEATS = "groups:\n  chess:\n    name: Chess\n    members: [hector, cedric, hector]\n"


def test_warnings_are_printed_but_fail_only_with_strict(tmp_path: Path) -> None:
    config = setup(tmp_path, REPEATS)
    plain = groupsync("validate", "--config", str(config))
    assert plain.returncode == 0
    assert (
        "warning: spec.yaml:4:31: groups.chess.members[2]: 'hector' is listed twice" in plain.stderr
    )
    assert "spec OK: 1 group in 1 file, 0 errors, 1 warning" in plain.stdout
    strict = groupsync("validate", "--config", str(config), "--strict")
    assert strict.returncode == 1
    assert "'hector' is listed twice" in strict.stderr


def test_spec_option_needs_no_config(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("groups: {a: {name: A}}\n", encoding="utf-8")
    result = groupsync("validate", "--spec", str(tmp_path / "spec.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("spec OK: 1 group in 1 file")


def test_example_campus_validates_offline() -> None:
    result = groupsync("validate", "--config", "config.example.yaml", "--strict")
    assert result.returncode == 0, result.stderr
    assert "11 groups in 5 files, 0 errors, 0 warnings" in result.stdout


def test_schema_command_prints_the_json_schema() -> None:
    result = groupsync("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == {"member_sets", "groups", "rosters", "generate", "notify"}


ONLINE_SPEC = """\
member_sets:
  staff: [prof.ada, ghost]
groups:
  chess:
    name: Chess
    members: [hectr, cedric, "@staff"]
  robots:
    name: Robots
    members: ["@staff"]
  hiking:
    name: Hiking
"""


def test_online_reports_unknown_usernames_per_group(tmp_path: Path, emulator: Emulator) -> None:
    for username in ("prof.ada", "hector", "cedric", *(f"student{i:03d}" for i in range(150))):
        emulator.state.add_contact(username)
    config = setup(tmp_path, ONLINE_SPEC, emulator.base_url)
    result = groupsync("validate", "--config", str(config), "--online", token="test-token")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("spec.yaml:")]
    assert errors == [
        "spec.yaml:6:15: groups.chess.members: 'hectr' is not an eCampus contact"
        " (did you mean 'hector'?)",
        "spec.yaml:6:30: groups.chess.members: 'ghost' (from @staff) is not an eCampus contact",
        "spec.yaml:9:15: groups.robots.members: 'ghost' (from @staff) is not an eCampus contact",
    ]
    # One contact list, paginated (151 contacts: two pages of 100), and nothing else.
    assert emulator.count(method="GET", path="/v1/contacts") == 2
    assert emulator.count(method="GET") == emulator.count()


def test_online_passes_on_the_seeded_campus(tmp_path: Path, seeded_emulator: Emulator) -> None:
    config = tmp_path / "groupsync.yaml"
    spec = ROOT / "examples" / "groups"
    config.write_text(
        f"api: {{base_url: '{seeded_emulator.base_url}'}}\nspec: {{path: {spec}}}\n", "utf-8"
    )
    result = groupsync("validate", "--config", str(config), "--online", token="test-token")
    assert result.returncode == 0, result.stderr
    assert "11 groups in 5 files" in result.stdout


def test_online_with_a_refused_token_says_so_without_the_token(
    tmp_path: Path, emulator: Emulator
) -> None:
    config = setup(tmp_path, "groups: {a: {name: A, members: [x]}}\n", emulator.base_url)
    result = groupsync_process("validate", "--config", str(config), "--online", token=SECRET)
    assert result.returncode == 1
    assert "refused the token" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_online_without_a_token_is_a_clear_error(tmp_path: Path) -> None:
    config = setup(tmp_path, "groups: {}\n")
    offline = groupsync("validate", "--config", str(config))
    assert offline.returncode == 0  # no token needed offline
    online = groupsync("validate", "--config", str(config), "--online")
    assert online.returncode == 1
    assert "Error: no API token: set $ECAMPUS_TOKEN" in online.stderr
