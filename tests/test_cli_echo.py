"""The CLI against a server that echoes the Authorization header in its errors.

No 8-character piece of the token may reach stdout, stderr, the daemon's log, the journal
(its -wal too) or a plan file, whichever field of the error carried it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groupsync.emulator import serve_emulator
from groupsync.secret import MASK
from helpers import token_pieces
from test_cli_e2e import groupsync_process, spec_file, write_config

TOKEN = "sk-live-9f8e7d6c5b4a3210-AbCdEfGhIjKl"


@pytest.mark.slow
def test_an_echoed_token_reaches_no_output_journal_or_plan_file(tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    with serve_emulator(token=TOKEN) as emu:
        emu.state.add_contact("ada")
        spec = spec_file(tmp_path, {"chess": {"name": "Chess", "members": ["ada"]}})
        config = write_config(tmp_path, emu, spec)

        def run(*args: str, **faults: object) -> str:
            emu.faults.update(**faults)
            result = groupsync_process(*args, config=config, token=TOKEN)
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
            return result.stdout + result.stderr

        # Reads refused: the plan, the saved plan and the daemon's run fail, saying why.
        outputs = [
            run("plan", echo_auth="type"),
            run("plan", "-o", str(saved), echo_auth="html"),
            run("run", "--once", echo_auth="message"),
            # Reads answered, the create refused: journaled per change.
            run("apply", "--yes", echo_auth="html", echo_auth_writes_only=True),
        ]
        assert not saved.exists()
        emu.faults.update(echo_auth="type")  # still on writes only: a plan can be saved
        planned = groupsync_process("plan", "-o", str(saved), config=config, token=TOKEN)
        assert planned.returncode == 0, planned.stderr
        history = groupsync_process("history", "--json", config=config, token=TOKEN)
        assert emu.state.groups() == []

    assert "HTTP 400 Bearer " + MASK + ": bad" in outputs[0]
    assert "unexpected text/html answer" in outputs[1]
    assert "error=GET /groups: HTTP 400" in outputs[2]  # the daemon's log line
    assert f"Authorization: Bearer {MASK}" in outputs[3] and "chess" in outputs[3]
    runs = json.loads(history.stdout)
    assert [r["outcome"] for r in runs] == ["failed", "error"]
    assert runs[1]["error"].startswith("GET /groups: HTTP 400 invalid_request: malformed header")
    assert "400 Bad Request" in runs[0]["changes"][0]["error"]

    files = [saved, *tmp_path.glob("journal.db*")]
    assert len(files) >= 2
    texts = [*outputs, planned.stdout + planned.stderr, history.stdout + history.stderr]
    for text in texts + [path.read_bytes() for path in files]:
        assert token_pieces(text, TOKEN) == []
