"""State snapshots at scale: does planning from a snapshot cost about what planning from the
journal does?

A pull request's plan reads the daemon's state from a snapshot instead of the journal. The
target (issue 12): exporting the snapshot, loading it and planning from it add under 10% to a
10,000-group plan made with the journal. Measured here:

- the plan with the journal (`Session(settings, token, journal).plan`: the journal's state read,
  the emulator's lists, the diff), the baseline;
- the export (`state.snapshot_bytes`, what `state export` writes and the daemon serves);
- the load (`state.load_snapshot`: JSON, strict validation);
- the plan from the loaded snapshot (`Session(settings, token, state=...)`).

Overhead = export + load + plan from the snapshot - plan with the journal, as a share of the
latter, in CPU time (the emulator runs in this process, so that is the whole work; wall time,
shown too, moves with whatever else the machine runs). Each timing is the median of several
rounds; the two plans alternate, round by round. The account
is plan_scale's (20 members a group, 2% drift of every kind, one group in ten archived), and
both plans are checked to be the same plan, checksum included, so a fast wrong answer cannot
pass.

Run from the repository root: `python benchmarks/state_scale.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from groupsync.config import Settings
from groupsync.emulator import serve_emulator
from groupsync.journal import Journal
from groupsync.outcomes import RunOutcome
from groupsync.reconcile import Planned, Session
from groupsync.secret import Secret
from groupsync.spec import Spec, load_spec
from groupsync.state import State, load_snapshot, snapshot_bytes
from plan_scale import TOKEN, Account, build_account, check_plan, write_spec

T = TypeVar("T")
RATE_PER_S = 1000.0  # high on purpose, as in plan_scale: measure groupsync, not the budget
OVERHEAD_TARGET = 0.10


def timed(rounds: int, what: Callable[[], T]) -> tuple[T, float, float]:
    """`what`'s result, and the median wall and CPU seconds over `rounds` calls."""
    walls, cpus = [], []
    result: Any = None
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        result = what()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return result, statistics.median(walls), statistics.median(cpus)


def fill_journal(path: Path, account: Account) -> Journal:
    journal = Journal.open(path)
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="bench")
    for key, mg in account.managed.items():
        assert mg.applied is not None
        journal.set_managed(key, mg.group_id, mg.applied)
    journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={})
    return journal


def measure(groups: int, members: int, rounds: int, workdir: Path) -> dict[str, Any]:
    account = build_account(groups, members)
    spec_path = workdir / "spec.yaml"
    write_spec(spec_path, account.desired)
    spec: Spec = load_spec(spec_path)
    out: dict[str, Any] = {"groups": groups, "members": members, "rounds": rounds}
    with serve_emulator(token=TOKEN) as emu, fill_journal(workdir / "j.db", account) as journal:
        for g in account.actual:
            emu.state.add_group(
                g.name, members=sorted(g.members), archived=g.archived, id=g.id,
                created_at=g.created_at,
            )  # fmt: skip
        settings = Settings.model_validate(
            {
                "api": {"base_url": emu.base_url, "max_requests_per_s": RATE_PER_S},
                "spec": {"path": str(spec_path)},
                "journal": {"path": str(journal.path)},
            }
        )

        def plan(session: Session) -> tuple[Planned, float, float]:
            return timed(1, lambda: asyncio.run(session.plan(spec)))

        with_journal = Session(settings, Secret(TOKEN), journal)
        plan(with_journal)  # warm up: the emulator's JSON caches
        data, out["export_s"], out["export_cpu_s"] = timed(rounds, lambda: snapshot_bytes(journal))
        state: State
        state, out["load_s"], out["load_cpu_s"] = timed(
            rounds, lambda: load_snapshot(data, "bench")
        )
        with_snapshot = Session(settings, Secret(TOKEN), state=state)
        runs: dict[str, list[tuple[Planned, float, float]]] = {"journal": [], "snapshot": []}
        for _ in range(rounds):  # interleaved, so a busy moment of the machine hits both
            runs["journal"].append(plan(with_journal))
            runs["snapshot"].append(plan(with_snapshot))
        for name, results in runs.items():
            out[f"{name}_s"] = statistics.median(wall for _, wall, _ in results)
            out[f"{name}_cpu_s"] = statistics.median(cpu for _, _, cpu in results)
        mine, theirs = runs["journal"][0][0], runs["snapshot"][0][0]
    check_plan(mine.plan, account)
    if (theirs.plan.changes, theirs.plan.checksum) != (mine.plan.changes, mine.plan.checksum):
        raise SystemExit("the plan from the snapshot is not the plan from the journal")
    out["bytes"] = len(data)
    out["changes"] = len(mine.plan.changes)
    return out


def report(m: dict[str, Any]) -> str:
    size = f"{m['groups']:,} groups x {m['members']}"
    added = {
        kind: m[f"export{kind}"] + m[f"load{kind}"] + m[f"snapshot{kind}"] - m[f"journal{kind}"]
        for kind in ("_s", "_cpu_s")
    }
    share = {kind: value / m[f"journal{kind}"] for kind, value in added.items()}
    rows = [
        (
            f"plan with the journal, {size}, {m['changes']} changes",
            f"{m['journal_s']:.2f} s wall, {m['journal_cpu_s']:.2f} s CPU",
            "-",
            "info",
        ),
        (
            f"export (snapshot_bytes), {m['bytes'] / 2**20:.1f} MiB",
            f"{m['export_s']:.3f} s wall, {m['export_cpu_s']:.3f} s CPU",
            "-",
            "info",
        ),
        (
            "load (load_snapshot: JSON + strict validation)",
            f"{m['load_s']:.3f} s wall, {m['load_cpu_s']:.3f} s CPU",
            "-",
            "info",
        ),
        (
            "plan from the snapshot (same plan, same checksum)",
            f"{m['snapshot_s']:.2f} s wall, {m['snapshot_cpu_s']:.2f} s CPU",
            "-",
            "info",
        ),
        (
            "export + load + plan from it, over the plan with the journal (CPU)",
            f"{added['_cpu_s']:+.3f} s ({share['_cpu_s']:+.1%})",
            f"< {OVERHEAD_TARGET:.0%}",
            "PASS" if share["_cpu_s"] < OVERHEAD_TARGET else "MISS",
        ),
        (
            "the same in wall time (noisy on a shared machine)",
            f"{added['_s']:+.3f} s ({share['_s']:+.1%})",
            "-",
            "info",
        ),
    ]
    lines = ["| measure | value | target | result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 groups, 1 round (smoke)")
    args = parser.parse_args()
    groups, rounds = (2_000, 1) if args.quick else (10_000, 5)
    with tempfile.TemporaryDirectory(prefix="groupsync-bench-") as tmp:
        m = measure(groups, 20, rounds, Path(tmp))
    print(
        f"median of {rounds} round(s); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(report(m))


if __name__ == "__main__":
    main()
