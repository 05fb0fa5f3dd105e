"""Each malformed spec in tests/spec_corpus/ via the CLI's entry point: exit 1, right place, no
traceback.

In this process (`groupsync.cli.main`, what `python -m groupsync` runs): a traceback fails the
test, and a timeout fails an alias bomb or a pathological file instead of letting it hang.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import run_cli

Result = subprocess.CompletedProcess[str]

CORPUS = Path(__file__).parent / "spec_corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))


def run_validate(config: Path, *args: str) -> Result:
    return run_cli("validate", "--config", str(config), *args)


def config_for(tmp_path: Path, spec: Path) -> Path:
    config = tmp_path / "groupsync.yaml"
    config.write_text(f"spec:\n  path: {spec}\n", encoding="utf-8")
    return config


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    on_disk = {p.name for p in CORPUS.iterdir()} - {"cases.yaml"}
    assert on_disk == {case["spec"] for case in CASES.values()}, "every file is a case, and back"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_spec_is_rejected_where_it_is(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    result = run_validate(config_for(tmp_path, CORPUS / case["spec"]))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    where = f"{case['file']}:{case['line']}:" if case["line"] else ""
    matching = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(where) and case["message"] in line
    ]
    assert matching, f"expected {where} ... {case['message']!r} in:\n{output}"


def test_oversized_file_is_rejected_before_parsing(tmp_path: Path) -> None:
    spec = tmp_path / "huge.yaml"
    filler = "# " + "x" * 1022 + "\n"
    spec.write_text("groups: {}\n" + filler * (5 * 1024 + 1), encoding="utf-8")
    result = run_validate(config_for(tmp_path, spec))
    assert result.returncode == 1
    assert (
        "huge.yaml:1:1: file is over the 5 MiB limit: split the spec into a folder of smaller"
        " *.yaml files" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_every_error_of_a_file_in_one_pass_sorted_by_line(tmp_path: Path) -> None:
    spec = tmp_path / "groups"
    spec.mkdir()
    (spec / "b.yaml").write_text(
        "groups:\n  chess:\n    name: Chess\n    nmae: x\n    members: ['@staf']\n",
        encoding="utf-8",
    )
    (spec / "a.yaml").write_text(
        "member_sets:\n  staff: [prof.ada]\ngroups:\n  Bad:\n    name: ''\n", encoding="utf-8"
    )
    result = run_validate(config_for(tmp_path, spec))
    errors = [line for line in result.stderr.splitlines() if line.startswith("groups/")]
    assert [line.split(": ")[0] for line in errors] == [
        "groups/a.yaml:4:3",
        "groups/a.yaml:5:11",
        "groups/b.yaml:4:5",
        "groups/b.yaml:5:15",
    ]
    assert "4 errors" in result.stderr
