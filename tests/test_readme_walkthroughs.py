"""The README's walkthroughs run as written: their shell blocks are copied out of README.md and
run by bash, in order, against the emulator the first block starts.

What the test changes, and only that: it runs in a temporary copy of what the blocks need
(examples/, and a `.venv/bin/groupsync` that runs this Python's groupsync), puts the blocks'
`/tmp/` files in its own temporary folder, and lets the emulator pick a free port instead of
8765, so runs in parallel do not meet. A person's Ctrl-C stops the emulator, as the README says.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
UNITS = REPO / "systemd"
WALKTHROUGHS = ("Try it against the emulator", "Bringing an existing account under groupsync")
README_PORT = "8765"
READY = re.compile(r"serving http://127\.0\.0\.1:(\d+)/v1")
START_TIMEOUT_S = 30


def shell_blocks(heading: str) -> list[str]:
    """The ```sh blocks of the README section under `### heading`, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n### {heading}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """What the blocks read from the repository's root: examples/ and .venv/bin/groupsync."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "examples", root / "examples")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    launcher = bin_dir / "groupsync"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m groupsync "$@"\n')
    launcher.chmod(0o755)
    return root


@contextmanager
def started_emulator(block: str, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """Run the emulator block in its own session; yield its port once it serves; then Ctrl-C."""
    command = block.replace(f"--port {README_PORT}", "--port 0")
    assert command != block, "the emulator block no longer names --port 8765"
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield _wait_until_serving(proc)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _wait_until_serving(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                seen += line
                if match := READY.search(line):
                    return match.group(1)
                if not line:
                    break
    raise AssertionError(f"the emulator did not start within {START_TIMEOUT_S}s: {seen!r}")


def run_block(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One block as a script: bash stops at the first command that fails."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{block}\n{output}"
    return result


@pytest.mark.slow
def test_the_emulator_and_existing_account_walkthroughs_run_as_written(
    checkout: Path, tmp_path: Path
) -> None:
    emulator_block, *first = shell_blocks(WALKTHROUGHS[0])
    second = shell_blocks(WALKTHROUGHS[1])
    assert "groupsync emulator" in emulator_block and len(first) == 1 and len(second) == 1
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ECAMPUS_TOKEN", "GROUPSYNC_CONFIG")}
    env["NO_COLOR"] = "1"

    def ours(block: str, port: str) -> str:
        return block.replace("/tmp/", f"{scratch}/").replace(f":{README_PORT}/", f":{port}/")

    with started_emulator(emulator_block, checkout, env) as port:
        tried = run_block(ours(first[0], port), checkout, env)
        assert "Plan: 1 to create, 10 to adopt" in tried.stdout
        assert "failed 0" in tried.stdout and "manual apply  applied" in tried.stdout

        adopted = run_block(ours(second[0], port), checkout, env)
        assert "Archived groups left out: 1" in adopted.stderr
        assert "The account itself does not change" in adopted.stdout
        assert "+ create" not in adopted.stdout and "~ update" not in adopted.stdout
        assert "failed 0" in adopted.stdout
        assert (scratch / "campus" / "groups" / "existing.yaml").is_file()


def test_the_readme_installs_the_documentation_the_units_name() -> None:
    readme = README.read_text(encoding="utf-8")
    for unit in sorted(UNITS.iterdir()):
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation=file://"):
                path = line.removeprefix("Documentation=file://")
                assert re.search(rf"^\s*install .*README\.md {re.escape(path)}\b", readme, re.M), (
                    f"{unit.name} names {path}, which no README step installs"
                )
