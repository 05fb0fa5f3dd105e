"""`groupsync apply` on a real pseudo-terminal: Ctrl-C and SIGTERM, the progress bar, timing.

The terminal is the process's controlling terminal, so a typed Ctrl-C (\\x03) is a real SIGINT
sent by the line discipline, as in a shell. The emulator's latency fault keeps the apply slow
enough to interrupt; the tests poll the terminal for the progress line instead of sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from groupsync.emulator import Emulator
from helpers import Terminal

pytestmark = pytest.mark.slow

TOKEN = "test-token"
CHANGES = 12
PROGRESS = re.compile(rb"Applying .*create g\d\d")  # the bar, naming the change being sent


@pytest.fixture
def terminal() -> Iterator[Callable[[Path], Terminal]]:
    """Start `groupsync apply --config CONFIG` on a terminal; it never outlives the test."""
    started: list[Terminal] = []

    def start(config: Path) -> Terminal:
        env = {**os.environ, "ECAMPUS_TOKEN": TOKEN, "NO_COLOR": "1", "COLUMNS": "120"}
        started.append(Terminal(["apply", "--config", str(config)], env, controlling=True))
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
