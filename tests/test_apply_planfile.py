"""`apply PLANFILE` refuses a stale saved plan and says which group, by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from groupsync.emulator import Emulator
from test_cli_e2e import groupsync, spec_file, write_config, writes


@pytest.mark.parametrize("by_hand", ["renamed", "deleted"])
def test_a_stale_saved_plan_names_the_group_by_key(
    emulator: Emulator, tmp_path: Path, by_hand: str
) -> None:
    chess = emulator.state.add_group("Chess", description="old")
    emulator.state.add_group("Go", description="old")
    spec = spec_file(
        tmp_path,
        {"chess": {"name": "Chess", "description": "new"}, "go": {"name": "Go"}},
    )
    config = write_config(tmp_path, emulator, spec)
    saved = tmp_path / "plan.json"
    assert groupsync("plan", "-o", str(saved), config=config).returncode == 0

    if by_hand == "renamed":
        emulator.state.update_group(chess["id"], {"name": "Chess club"})
    else:
        emulator.state.delete_group(chess["id"])
    stale = groupsync("apply", "--yes", str(saved), config=config)
    assert stale.returncode == 1
    what = "changed" if by_hand == "renamed" else "was deleted"
    assert (
        f"saved plan is stale: group chess (id {chess['id']}) {what} since the plan was made"
        in stale.stderr
    )
    assert writes(emulator) == 0
