"""`groupsync plan` through the entry point on a small account: normal work is not refused."""

from __future__ import annotations

from pathlib import Path

import yaml

from groupsync.emulator import Emulator
from helpers import emulator_config, run_cli


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
    config = emulator_config(tmp_path, emulator.base_url, spec)
    result = run_cli("plan", "--detailed-exitcode", "--config", str(config), token="test-token")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "adopt" in output and "would remove" not in output
