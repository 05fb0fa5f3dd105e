"""`groupsync plan` through the entry point on a small account: normal work is not refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from groupsync.emulator import Emulator


def test_setting_the_members_of_an_adopted_one_member_group_is_not_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Removing 1 of 1 membership is 100%, but under safety.min_member_removals: exit 2, not 3."""
    emulator.state.add_group("Chess Club", members=["ada"])
    emulator.state.add_contact("grace")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"groups": {"chess": {"name": "Chess Club", "members": ["grace"]}}}),
        encoding="utf-8",
    )
    config = tmp_path / "groupsync.yaml"
    settings = {
        "api": {"base_url": emulator.base_url},
        "spec": {"path": str(spec)},
        "journal": {"path": str(tmp_path / "journal.db")},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "groupsync", "plan", "--detailed-exitcode", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ECAMPUS_TOKEN": "test-token", "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "adopt" in output and "would remove" not in output
