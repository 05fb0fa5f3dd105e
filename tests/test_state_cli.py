"""The pull-request story through the CLI: CI plans from the daemon's state, the server applies it.

CI has no journal. Planned blind, a spec that renames a group and drops another shows a create
and no archive, and its checksum never matches the server's. Planned from the server's state (a
snapshot file, or a URL serving one), it shows the server's plan, and the server's
`apply --checksum <CI's checksum>` goes through.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from groupsync.emulator import Emulator
from helpers import groupsync, serve_asgi, token_pieces

API_TOKEN = "test-token"
HTTP_TOKEN = "state-token-0123456789abcdef"
NONE_LINE = "State: none — every key is new; renames and removals cannot be seen"


def _setup(folder: Path, base_url: str, groups: dict[str, Any], journal: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    config = folder / "groupsync.yaml"
    settings = {
        "api": {"base_url": base_url},
        "spec": {"path": "spec.yaml"},
        "journal": {"path": str(journal)},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def _state_app(snapshot: bytes) -> Starlette:
    """The daemon's GET /state as far as a plan needs it: the snapshot, behind a bearer token."""

    async def state(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {HTTP_TOKEN}":
            return Response("unauthorized", status_code=401)
        return Response(snapshot, media_type="application/json")

    return Starlette(routes=[Route("/state", state)])


def _ok(result: Any, code: int = 0) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


V1 = {"chess-club": {"name": "Chess Club"}, "hiking": {"name": "Hiking"}}
V2 = {"chess-club": {"name": "Chess & Go Club"}}


@pytest.mark.slow
def test_ci_plans_from_the_servers_state_and_the_server_applies_its_checksum(
    emulator: Emulator, tmp_path: Path
) -> None:
    server = _setup(tmp_path / "server", emulator.base_url, V1, tmp_path / "server" / "j.db")
    _ok(groupsync("apply", "--yes", "--config", str(server), token=API_TOKEN))
    exported = tmp_path / "state.json"
    _ok(groupsync("state", "export", "-o", str(exported), "--config", str(server)))
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert not token_pieces(exported.read_bytes(), API_TOKEN, size=6)

    # CI: the pull request's spec, and a journal path whose folder does not exist.
    ci = _setup(tmp_path / "ci", emulator.base_url, V2, tmp_path / "ci" / "none" / "j.db")
    blind = _ok(groupsync("plan", "--config", str(ci), token=API_TOKEN))
    assert blind.splitlines()[0] == NONE_LINE
    assert '+ create chess-club "Chess & Go Club"' in blind and "- archive" not in blind
    refused = groupsync("plan", "--require-state", "--config", str(ci), token=API_TOKEN)
    assert refused.returncode == 1 and NONE_LINE in refused.stderr and refused.stdout == ""
    assert not (tmp_path / "ci" / "none").exists()

    from_file = groupsync(
        "plan", "--state", str(exported), "--require-state", "--format", "json",
        "--config", str(ci), token=API_TOKEN,
    )  # fmt: skip
    doc = json.loads(_ok(from_file))
    assert doc["state"] == {
        "source": "snapshot",
        "location": str(exported),
        "run_id": 1,
        "managed_count": 2,
    }
    changes = {c["key"]: c["action"] for c in doc["plan"]["changes"]}
    assert changes == {"chess-club": "update", "hiking": "archive"}

    with serve_asgi(_state_app(exported.read_bytes())) as base:
        url = f"{base}/state"
        from_url = groupsync(
            "plan", "--state", url, "--require-state", "--format", "markdown",
            "--config", str(ci), token=API_TOKEN, env_extra={"GROUPSYNC_HTTP_TOKEN": HTTP_TOKEN},
        )  # fmt: skip
        text = groupsync(
            "plan", "--state", url, "--state-token-env", "MY_TOKEN", "--config", str(ci),
            token=API_TOKEN, env_extra={"MY_TOKEN": HTTP_TOKEN},
        )  # fmt: skip
    markdown = _ok(from_url)
    assert f"State: snapshot {url} (run 1, 2 managed)" in markdown
    assert not token_pieces(markdown + from_url.stderr, HTTP_TOKEN)
    [checksum] = re.findall(r"Checksum: `([0-9a-f]{64})`", markdown)
    assert checksum == doc["checksum"]
    assert _ok(text).splitlines()[0] == f"State: snapshot {url} (run 1, 2 managed)"
    assert "~ update chess-club" in _ok(text) and "- archive hiking" in _ok(text)

    # The pull request merges: the server applies exactly what CI showed.
    (tmp_path / "server" / "spec.yaml").write_text(yaml.safe_dump({"groups": V2}), "utf-8")
    applied = groupsync(
        "apply", "--yes", "--checksum", checksum, "--config", str(server), token=API_TOKEN
    )
    out = _ok(applied)
    assert (
        out.splitlines()[0] == f"State: journal {tmp_path / 'server' / 'j.db'} (run 2, 2 managed)"
    )
    assert "Applied 2, failed 0" in out
    names = {g["name"]: g["archived_at"] is not None for g in emulator.state.groups()}
    assert names == {"Chess & Go Club": False, "Hiking": True}


@pytest.mark.slow
@pytest.mark.parametrize("command", [["apply", "--yes"], ["run", "--once"]])
def test_a_journal_folder_that_does_not_exist_stops_apply_and_run(
    emulator: Emulator, tmp_path: Path, command: list[str]
) -> None:
    config = _setup(tmp_path, emulator.base_url, V1, tmp_path / "missing" / "j.db")
    result = groupsync(*command, "--config", str(config), token=API_TOKEN)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"directory {tmp_path / 'missing'} does not exist" in result.stderr
    assert emulator.count(method="POST") == 0 and not (tmp_path / "missing").exists()


def test_state_export_needs_a_journal_and_creates_none(tmp_path: Path) -> None:
    config = _setup(tmp_path, "http://127.0.0.1:9/v1", V1, tmp_path / "j.db")
    result = groupsync("state", "export", "--config", str(config))
    assert result.returncode == 1
    assert f"journal {tmp_path / 'j.db'} does not exist" in result.stderr
    assert not (tmp_path / "j.db").exists()


def test_the_ci_example_plans_from_the_daemons_state() -> None:
    from groupsync.cli import cli

    workflow = Path(__file__).resolve().parent.parent / "examples" / "ci" / "github-actions.yml"
    steps = yaml.safe_load(workflow.read_text(encoding="utf-8"))["jobs"]["plan"]["steps"]
    [script] = [s["run"] for s in steps if "groupsync plan" in s.get("run", "")]
    line = script.split("groupsync plan", 1)[1].split(">", 1)[0].replace("\\\n", " ")
    args = shlex.split(line)
    assert "--require-state" in args and "--state" in args
    cli.commands["plan"].make_context("plan", args)  # a UsageError here: the example is wrong
