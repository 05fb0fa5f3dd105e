"""`groupsync apply` on a real pseudo-terminal: Ctrl-C and SIGTERM, the progress bar, timing.

The terminal is the process's controlling terminal, so a typed Ctrl-C (\\x03) is a real SIGINT
sent by the line discipline, as in a shell. The emulator's latency fault keeps the apply slow
enough to interrupt; the tests poll the terminal for the progress line instead of sleeping.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import termios
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from groupsync.emulator import Emulator

pytestmark = pytest.mark.slow

TOKEN = "test-token"
CHANGES = 12
PROGRESS = re.compile(rb"Applying .*create g\d\d")  # the bar, naming the change being sent


def _take_terminal() -> None:
    """In the child, after setsid(): make the pty (its stdin) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`groupsync apply` with a pty as its controlling terminal and all three streams."""

    def __init__(self, args: list[str]) -> None:
        self.primary, secondary = pty.openpty()
        env = {**os.environ, "ECAMPUS_TOKEN": TOKEN, "NO_COLOR": "1", "COLUMNS": "120"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "groupsync", "apply", *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env=env,
            start_new_session=True,
            preexec_fn=_take_terminal,  # only an ioctl before exec: safe next to threads
        )
        os.close(secondary)
        self.output = b""

    def _read(self, timeout: float) -> int:
        """Bytes read within `timeout` (0: none came); -1 once the child closed the terminal."""
        ready, _, _ = select.select([self.primary], [], [], timeout)
        if not ready:
            return 0
        try:
            chunk = os.read(self.primary, 4096)
        except OSError:  # EIO: the child is gone
            return -1
        self.output += chunk
        return len(chunk) or -1

    def wait_for(self, pattern: bytes | re.Pattern[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (
            pattern.search(self.output)
            if isinstance(pattern, re.Pattern)
            else pattern in self.output
        ):
            if time.monotonic() > deadline or self._read(0.2) < 0:
                raise AssertionError(f"no {pattern!r} in:\n{self.text}")

    def type(self, data: bytes) -> None:
        os.write(self.primary, data)

    def exit_code(self, timeout: float = 30) -> int | None:
        """The exit code once all output is read, or None if it still runs after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self._read(0.2) < 0:
                break
        while self._read(0.1) > 0:
            continue
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.primary)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


@pytest.fixture
def terminal() -> Iterator[Callable[[Path], Terminal]]:
    """Start `groupsync apply --config CONFIG` on a terminal; it never outlives the test."""
    started: list[Terminal] = []

    def start(config: Path) -> Terminal:
        started.append(Terminal(["--config", str(config)]))
        return started[-1]

    yield start
    for term in started:
        term.close()


def setup(emulator: Emulator, tmp_path: Path) -> Path:
    """A config whose spec creates CHANGES groups, two at a time."""
    emulator.state.add_contact("ada")
    groups = {f"g{n:02}": {"name": f"Group {n}", "members": ["ada"]} for n in range(CHANGES)}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    config = tmp_path / "groupsync.yaml"
    settings = {
        "api": {"base_url": emulator.base_url, "max_concurrency": 2, "max_requests_per_s": 200},
        "spec": {"path": "spec.yaml"},
        "journal": {"path": str(tmp_path / "journal.db")},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def journal_rows(tmp_path: Path) -> tuple[list[tuple[str, str]], Counter[str]]:
    """(outcome, error) of each run, and the status of every change."""
    with sqlite3.connect(tmp_path / "journal.db") as db:
        runs = db.execute("SELECT outcome, error FROM runs ORDER BY id").fetchall()
        statuses = Counter(s for (s,) in db.execute("SELECT status FROM changes"))
    return runs, statuses


def summary(text: str) -> tuple[int, int, int, int]:
    match = re.search(r"Applied (\d+), failed (\d+), skipped (\d+)(?:, unknown (\d+))?", text)
    assert match, text
    return tuple(int(n or 0) for n in match.groups())  # type: ignore[return-value]


@pytest.mark.parametrize("key", [b"\x03", b"SIGTERM"], ids=["ctrl-c", "sigterm"])
def test_a_stop_at_the_prompt_applies_nothing_and_exits_130(
    emulator: Emulator, tmp_path: Path, terminal: Callable[[Path], Terminal], key: bytes
) -> None:
    term = terminal(setup(emulator, tmp_path))
    term.wait_for(b"Apply these changes? [y/N]")
    stopped_at = time.monotonic()
    if key == b"SIGTERM":
        term.proc.send_signal(signal.SIGTERM)
    else:
        term.type(key)
    assert term.exit_code() == 130, term.text
    assert time.monotonic() - stopped_at < 5  # at once, not after another question
    assert "Nothing applied." in term.text
    assert "invalid input" not in term.text and "Traceback" not in term.text
    assert sum(emulator.count(method=m) for m in ("POST", "PUT", "DELETE")) == 0
    name = "SIGTERM" if key == b"SIGTERM" else "SIGINT"
    runs, statuses = journal_rows(tmp_path)
    assert runs == [("interrupted", f"stopped by {name} at the confirmation prompt")]
    assert statuses == Counter()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stop_during_apply_lets_the_changes_in_flight_finish(
    emulator: Emulator, tmp_path: Path, terminal: Callable[[Path], Terminal], how: str
) -> None:
    term = terminal(setup(emulator, tmp_path))
    term.wait_for(b"Apply these changes? [y/N]")
    emulator.faults.latency_s = 0.5  # every write from now on
    term.type(b"y\n")
    term.wait_for(PROGRESS)
    if how == "sigterm":
        term.proc.send_signal(signal.SIGTERM)
    else:
        term.type(b"\x03")
    assert term.exit_code() == 130, term.text
    assert "starting no more changes" in term.text
    applied, failed, skipped, unknown = summary(term.text)
    assert applied >= 1 and skipped >= 1 and (failed, unknown) == (0, 0)
    assert applied + skipped == CHANGES
    assert emulator.count(method="POST") == applied == len(emulator.state.groups())
    runs, statuses = journal_rows(tmp_path)
    assert [outcome for outcome, _ in runs] == ["interrupted"]
    assert statuses == Counter({"applied": applied, "skipped": skipped})  # none left pending


def test_a_second_ctrl_c_stops_at_once(
    emulator: Emulator, tmp_path: Path, terminal: Callable[[Path], Terminal]
) -> None:
    term = terminal(setup(emulator, tmp_path))
    term.wait_for(b"Apply these changes? [y/N]")
    emulator.faults.latency_s = 10.0  # every write from now on
    term.type(b"y\n")
    term.wait_for(PROGRESS)
    term.type(b"\x03")
    term.wait_for(b"press Ctrl-C again")
    again = time.monotonic()
    term.type(b"\x03")
    assert term.exit_code() == 130, term.text
    # The 10 s answers in flight were not waited for (the margin absorbs a busy machine).
    assert time.monotonic() - again < 6
    applied, failed, skipped, unknown = summary(term.text)
    assert (applied, failed, unknown) == (0, 0, 2) and skipped == CHANGES - 2
    runs, statuses = journal_rows(tmp_path)
    assert [outcome for outcome, _ in runs] == ["interrupted"]
    assert "SIGINT again" in runs[0][1]
    assert statuses == Counter({"unknown": 2, "skipped": CHANGES - 2})


def test_the_summary_counts_no_time_spent_at_the_prompt(
    emulator: Emulator, tmp_path: Path, terminal: Callable[[Path], Terminal]
) -> None:
    term = terminal(setup(emulator, tmp_path))
    term.wait_for(b"Apply these changes? [y/N]")
    time.sleep(1.5)  # a person reading the plan
    term.type(b"y\n")
    assert term.exit_code() == 0, term.text
    match = re.search(r"Applied 12, failed 0, skipped 0 \(run 1, (\d+\.\d)s\)", term.text)
    assert match, term.text
    assert float(match.group(1)) < 1.5
