"""A journal that cannot be used, and private files, through the CLI's entry point: in this
process, or as a process where only one can hold the condition (a file size limit, a umask).

Every failure is one line naming the journal and what to do, exit 1, never a traceback; a run
that hits one still ends truthfully, or the error says it could not be recorded.
"""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from groupsync.emulator import Emulator
from groupsync.journal import Journal
from test_cli_e2e import TOKEN, groupsync, spec_file, write_config, writes

GROUPS = {f"g{n:02}": {"name": f"Group {n:02}", "members": []} for n in range(40)}


@pytest.fixture
def config(emulator: Emulator, tmp_path: Path) -> Path:
    return write_config(tmp_path, emulator, spec_file(tmp_path, GROUPS))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _one_error_line(result: subprocess.CompletedProcess[str], journal: Path) -> str:
    """The run's single error line about `journal`; fails on a traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert line.startswith(f"Error: journal {journal}: "), line
    return line


def _limited(*args: str, config: Path, max_file_bytes: int) -> subprocess.CompletedProcess[str]:
    """groupsync with RLIMIT_FSIZE: no file it writes may grow past `max_file_bytes`.

    A write past the limit fails with EFBIG (Python ignores SIGXFSZ), as on a full disk.
    """
    launcher = (
        "import resource, runpy, sys;"
        f" resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes}));"
        " sys.argv[0] = 'groupsync';"
        " runpy.run_module('groupsync', run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "ECAMPUS_TOKEN": TOKEN, "NO_COLOR": "1"},
        timeout=60,
        input="",
    )


def test_a_full_disk_mid_apply_is_one_line_and_the_next_apply_recovers(
    emulator: Emulator, config: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.db"
    Journal.open(journal).close()  # migrated; its WAL starts empty at the next open
    # The -shm takes 32 KiB: this leaves the WAL room for the run row and a few changes' frames,
    # not for all 40 creates.
    full = _limited("apply", "--yes", config=config, max_file_bytes=64 * 1024)
    line = _one_error_line(full, journal)
    assert "disk" in line and "then run again" in line

    with Journal.open(journal) as j:
        [run] = j.history()
        recorded = run.outcome is not None
    if recorded:  # the run row could still be written: it says how the run ended
        assert run.outcome == "error" and run.error and f"journal {journal}" in run.error
    else:
        assert "could not be recorded" in line
    assert emulator.count(method="POST") < len(GROUPS)

    again = groupsync("apply", "--yes", config=config)
    assert again.returncode == 0, again.stdout + again.stderr
    names = [g["name"] for g in emulator.state.groups(archived=False)]
    assert sorted(names) == sorted(g["name"] for g in GROUPS.values())  # each exactly once
    assert groupsync("plan", "--detailed-exitcode", config=config).returncode == 0


def test_a_journal_with_damaged_pages_stops_every_command_before_it_writes(
    emulator: Emulator, config: Path, tmp_path: Path
) -> None:
    assert groupsync("apply", "--yes", config=config).returncode == 0
    journal = tmp_path / "journal.db"
    data = bytearray(journal.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    assert middle > 0
    data[middle : middle + 4096] = b"\xa5" * 4096
    journal.write_bytes(bytes(data))
    emulator.state.delete_group(emulator.state.groups()[0]["id"])  # so apply would write
    before = writes(emulator)

    for command in (("apply", "--yes"), ("plan",), ("history",)):
        line = _one_error_line(groupsync(*command, config=config), journal)
        assert "a check found damage" in line and "restore it from a backup" in line
    assert writes(emulator) == before


def test_a_read_only_journal_refuses_apply_but_plan_and_history_read_it(
    emulator: Emulator, config: Path, tmp_path: Path
) -> None:
    assert groupsync("apply", "--yes", config=config).returncode == 0
    journal = tmp_path / "journal.db"
    emulator.state.delete_group(emulator.state.groups()[0]["id"])  # so apply would write
    journal.chmod(0o400)
    before, sent = journal.read_bytes(), writes(emulator)

    line = _one_error_line(groupsync("apply", "--yes", config=config), journal)
    assert line == (
        f"Error: journal {journal}: cannot apply or run with it: {journal} is read-only (mode"
        " 0400); make the file and its folder writable by groupsync's user, or set"
        " journal.path to a writable place"
    )
    plan = groupsync("plan", "--detailed-exitcode", config=config)
    assert plan.returncode == 2 and "+ create" in plan.stdout  # the managed map was read
    history = groupsync("history", config=config)
    assert history.returncode == 0 and "manual apply  applied" in history.stdout
    assert journal.read_bytes() == before and writes(emulator) == sent


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_plan_files_the_journal_and_emulator_state_are_private_whatever_the_umask(
    config: Path, tmp_path: Path, umask: int
) -> None:
    saved, stale = tmp_path / "plan.json", tmp_path / "old-plan.json"
    stale.write_text("{}")
    stale.chmod(0o644)
    env = {**os.environ, "ECAMPUS_TOKEN": TOKEN, "NO_COLOR": "1"}
    for args in (("plan", "-o", str(saved)), ("plan", "-o", str(stale)), ("apply", "--yes")):
        done = subprocess.run(
            [sys.executable, "-m", "groupsync", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            umask=umask,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(saved.read_text())["checksum"]
    assert {_mode(p) for p in (saved, stale, tmp_path / "journal.db")} == {0o600}

    state = tmp_path / "emulator.db"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "groupsync", "emulator", "--port", "0", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=umask,
    )
    try:
        ready, _, _ = select.select([emulator.stdout], [], [], 30)
        assert ready and "serving" in emulator.stdout.readline()
        files = sorted(tmp_path.glob("emulator.db*"))
        assert [p.name for p in files] == ["emulator.db", "emulator.db-shm", "emulator.db-wal"]
        assert {_mode(p) for p in files} == {0o600}
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
