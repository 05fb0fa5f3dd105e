"""A new user's first commands: the demo from anywhere, and clear words from validate, history
and export. Through the CLI's entry point (the demo as a real `python -m groupsync` process)
against the emulator over HTTP."""

from __future__ import annotations

import ast
import filecmp
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from groupsync.demo import DEMO_DATA
from groupsync.emulator import Emulator
from test_cli_e2e import EXAMPLES, groupsync, spec_file, write_config


def listing(folder: Path) -> list[tuple[str, int, float]]:
    """Every entry under `folder` with its size and mtime: any write shows up."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*"))


def test_the_packaged_demo_campus_is_the_examples_folder() -> None:
    """examples/ is the source; the package carries a copy so the demo runs when installed."""
    fix = f"cp examples/seed.yaml examples/groups/*.yaml into {DEMO_DATA} (and its groups/)"
    assert filecmp.cmp(EXAMPLES / "seed.yaml", DEMO_DATA / "seed.yaml", shallow=False), fix
    names = sorted(p.name for p in (EXAMPLES / "groups").glob("*.yaml"))
    assert sorted(p.name for p in (DEMO_DATA / "groups").iterdir()) == names, fix
    _, mismatch, errors = filecmp.cmpfiles(
        EXAMPLES / "groups", DEMO_DATA / "groups", names, shallow=False
    )
    assert (mismatch, errors) == ([], []), fix


def test_the_packaged_roster_example_is_the_examples_folder() -> None:
    fix = f"cp -r examples/roster into {DEMO_DATA}/roster"
    source, packaged = EXAMPLES / "roster", DEMO_DATA / "roster"
    ours = sorted(p.relative_to(source) for p in source.rglob("*"))
    assert ours == sorted(p.relative_to(packaged) for p in packaged.rglob("*")), fix
    files = [str(p) for p in ours if (source / p).is_file()]
    _, mismatch, errors = filecmp.cmpfiles(source, packaged, files, shallow=False)
    assert (mismatch, errors) == ([], []), fix


@pytest.mark.slow
def test_demo_runs_from_a_read_only_folder_and_writes_nothing_there(tmp_path: Path) -> None:
    here = tmp_path / "elsewhere"  # neither the repository nor anything holding examples/
    here.mkdir()
    (here / "notes.txt").write_text("a user's own file\n")
    here.chmod(stat.S_IRUSR | stat.S_IXUSR)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    before = listing(here)
    result = subprocess.run(
        [sys.executable, "-m", "groupsync", "demo"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "TMPDIR": str(scratch)},
    )
    here.chmod(stat.S_IRWXU)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    steps = ("Plan: 1 to create, 10 to adopt", "No changes.", "(drift)", "run 2")
    steps += ("Plan: 4 to create", "Applied 4, failed 0")  # the course groups of examples/roster
    for step in steps:
        assert step in out
    assert out.index("No changes.") < out.index("(drift)")
    assert re.search(r"renamed by hand and put back 0\.\d\ds later, by a\nwebhook", out)
    assert "roster sis (oneroster" in result.stderr  # validate's roster counts
    assert listing(here) == before
    assert list(scratch.iterdir()) == [], "the demo left its temporary files behind"


def test_demo_does_not_import_the_cli() -> None:
    """The demo runs the CLI as child processes: no import of groupsync.cli, even in a function."""
    import groupsync.demo

    tree = ast.parse(Path(groupsync.demo.__file__).read_text(encoding="utf-8"))
    nodes = list(ast.walk(tree))
    imported = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in nodes if isinstance(n, ast.ImportFrom)}
    assert "groupsync.cli" not in imported and "groupsync" not in imported


@pytest.mark.slow
def test_demo_in_process_leaves_the_environment_and_the_folder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from groupsync.demo import run_demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    environ = dict(os.environ)
    assert run_demo() == 0  # returns its code: no SystemExit to catch
    assert dict(os.environ) == environ
    assert list(tmp_path.iterdir()) == []
    assert "Plan: 1 to create, 10 to adopt" in capfd.readouterr().out


WARNED = {"chess": {"name": "Chess", "members": ["hector", "cedric", "hector"]}}


def test_validate_strict_with_only_warnings_says_it_failed(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, WARNED)
    strict = groupsync("validate", "--spec", str(spec), "--strict")
    assert strict.returncode == 1
    assert "failed: 1 warning with --strict" in strict.stderr
    assert "spec OK" not in strict.stdout + strict.stderr
    plain = groupsync("validate", "--spec", str(spec))
    assert plain.returncode == 0 and "spec OK" in plain.stdout


@pytest.mark.parametrize("journal_exists", [False, True])
def test_history_before_any_run_says_so_and_succeeds(
    emulator: Emulator, tmp_path: Path, journal_exists: bool
) -> None:
    from groupsync.journal import Journal

    config = write_config(tmp_path, emulator, spec_file(tmp_path, {}))
    journal = tmp_path / "journal.db"
    if journal_exists:
        Journal.open(journal).close()
    result = groupsync("history", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Nothing applied yet."
    as_json = groupsync("history", "--json", config=config)
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []
    assert journal.exists() == journal_exists, "reading the history created the journal"


def test_history_shows_plain_values_not_python_reprs(emulator: Emulator, tmp_path: Path) -> None:
    emulator.state.add_contact("ada")
    spec = spec_file(tmp_path, {"cs101": {"name": "CS 101", "members": ["ada"]}})
    config = write_config(tmp_path, emulator, spec)
    assert groupsync("apply", "--yes", config=config).returncode == 0
    spec_file(tmp_path, {"cs101": {"name": "CS 101 — Fall", "description": "Fall term."}})
    assert groupsync("apply", "--yes", config=config).returncode == 0

    out = groupsync("history", "--limit", "1", config=config).stdout
    assert 'update cs101 (spec): applied; description: null -> "Fall term."' in out, out
    assert 'name: "CS 101" -> "CS 101 — Fall"' in out
    assert "None" not in out and "'" not in out


def test_export_says_how_many_archived_groups_it_left_out(
    seeded_emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, seeded_emulator, tmp_path / "spec.yaml")
    archived = len(seeded_emulator.state.groups(archived=True))
    assert archived > 0
    result = groupsync("export", config=config)
    assert result.returncode == 0, result.stderr
    notice = f"Archived groups left out: {archived} (--include-archived exports them too)."
    assert notice in result.stderr and notice not in result.stdout
    everything = groupsync("export", "--include-archived", config=config)
    assert everything.returncode == 0 and "left out" not in everything.stderr


def test_export_into_a_missing_folder_names_the_folder(
    seeded_emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, seeded_emulator, EXAMPLES / "groups")
    out = tmp_path / "groups" / "existing.yaml"
    result = groupsync("export", "-o", str(out), config=config)
    assert result.returncode == 1
    assert f"the folder {out.parent} does not exist" in result.stderr
