"""The benchmarks still run: each script's --quick mode exits 0 and prints its table.

Timings are the benchmarks' business, never asserted here (a shared CI machine would make that
flaky); what is asserted is that they run end to end against the current code and that what
they count (API calls, failures, convergence) came out right.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each script a process of its own, seconds long

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 110  # under pytest's 120 s per test; --quick takes ~10-20 s on 2 busy cores


def run_quick(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output: str) -> list[list[str]]:
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_plan_scale_quick_prints_its_table() -> None:
    output = run_quick("plan_scale.py")
    assert "| measure | value | target | result |" in output
    rows = {row[0]: row for row in table_rows(output)}
    assert len(rows) == 8
    assert all(row[-1] in ("PASS", "MISS", "info") for row in rows.values())
    # The call count is exact, not a timing: the plan costs the minimum list calls.
    assert rows["API calls for the plan"][-1] == "PASS"


def test_apply_scale_quick_prints_its_table() -> None:
    output = run_quick("apply_scale.py")
    assert "| scenario | wall | ideal |" in output
    rows = table_rows(output)
    assert len(rows) == 2
    for row in rows:
        failed, converged = row[7], row[8]
        assert failed == "0", row
        assert converged == "yes", row
        assert row[-1].startswith(("PASS", "MISS")), row


def test_roster_scale_quick_prints_its_table() -> None:
    output = run_quick("roster_scale.py")
    rows = {row[0]: row for row in table_rows(output)}
    assert len(rows) == 6
    assert all(row[-1] in ("PASS", "MISS", "info") for row in rows.values())
    # Exact, not a timing: a no-op plan of a generated roster costs only the list calls.
    assert rows["API calls, no-op plan"][-1] == "PASS"


def test_state_scale_quick_prints_its_table() -> None:
    output = run_quick("state_scale.py")
    rows = {row[0]: row for row in table_rows(output)}
    assert len(rows) == 6
    assert all(row[-1] in ("PASS", "MISS", "info") for row in rows.values())
    # Checked inside, not timed: the plan from the snapshot is the plan from the journal.
    assert any(name.startswith("plan from the snapshot (same plan") for name in rows)


def test_notify_scale_quick_posts_one_welcome_per_group() -> None:
    output = run_quick("notify_scale.py")
    rows = {row[0]: row[1] for row in table_rows(output)}
    assert rows["create_posts"] == rows["message_posts"] == rows["welcomes_seen"] == "50"
    assert rows["one_per_group"] == "True" and rows["outbox_sent"] == "50"


@pytest.mark.slow
def test_webhook_repair_quick_prints_its_table() -> None:
    output = run_quick("webhook_repair.py")
    assert "| measure | value | target | result |" in output
    rows = {row[0]: row for row in table_rows(output)}
    assert float(rows["API calls per repaired change"][1]) <= 2
