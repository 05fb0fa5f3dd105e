"""Apply at scale: do writes go out as fast as the API allows, once each, none lost?

The cost model (ARCHITECTURE.md, "Cost model"): applying N changes takes about
max(N x latency / concurrency, N / rate). The targets, measured here with the real `apply_plan`
and a real SQLite journal (temp dir, or --journal-dir) against the emulator on 127.0.0.1:

- (a) 1,000 changes, 20 ms emulator latency, client max_concurrency=8 and a client rate of
  1,000/s (high, so latency and concurrency are what bound it);
- (b) 300 changes under an emulator rate limit of 10 req/s (`Faults.rate_limit_per_s`: 429
  with Retry-After past it), client max_requests_per_s=10 so it paces itself instead of
  earning 429s; the same 20 ms latency, which the rate hides;

each within 1.25x of the ideal, with zero failed changes and one write per change plus retries.

The emulator runs in its own process (`groupsync emulator`, seeded from a file, faults and
counters through its /_admin endpoint): in this process its request handling would hold the GIL
against groupsync's event loop, and a real API costs the client nothing but waiting. The CPU
time of this process's event loop is printed next to the wall time, with the load average, to
tell a slow groupsync from a busy machine.

The changes are a mix (a quarter each): creates, renames, member additions and member removals,
so every apply phase runs. The plan is computed from the seeded values without HTTP, so only
the apply is timed and counted. Afterwards a fresh plan from the journal's managed map and a
fresh read of the account must be empty: the writes converged.

Run from the repository root: `python benchmarks/apply_scale.py [--quick] [--journal-dir D]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from groupsync.api import Client, Limits
from groupsync.apply import ApplyResult, apply_plan
from groupsync.journal import Journal
from groupsync.models import Group
from groupsync.plan import AppliedState, ManagedGroup, Plan, compute_plan
from groupsync.secret import Secret
from groupsync.spec import DesiredGroup

TOKEN = "bench-token"
ADMIN_TOKEN = "bench-admin-token"
MEMBERS = 10
POOL = 200
CONCURRENCY = 8
RATIO_TARGET = 1.25
WRITES = ("POST", "PUT", "DELETE")
STARTUP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Scenario:
    name: str
    changes: int
    latency_s: float
    client_rate: float
    emulator_rate: float | None

    @property
    def ideal_s(self) -> float:
        rate = min(self.client_rate, self.emulator_rate or self.client_rate)
        return max(self.changes * self.latency_s / CONCURRENCY, self.changes / rate)


@dataclass(frozen=True)
class Workload:
    seed: dict[str, Any]  # the emulator's seed file
    desired: dict[str, DesiredGroup]
    actual: list[Group]
    managed: dict[str, ManagedGroup]


def workload(n: int) -> Workload:
    """An account and a spec that differs from it by exactly n changes, a quarter of each kind."""
    pool = [f"u{k:04d}" for k in range(POOL)]
    groups: list[dict[str, Any]] = []
    desired: dict[str, DesiredGroup] = {}
    actual: list[Group] = []
    managed: dict[str, ManagedGroup] = {}
    for i in range(n):
        key, name = f"k{i:05d}", f"Group {i:05d}"
        members = frozenset(pool[(i * MEMBERS + j) % POOL] for j in range(MEMBERS))
        kind = i % 4
        if kind == 0:  # create
            desired[key] = DesiredGroup(key=key, name=f"New {i:05d}", members=members)
            continue
        gid = f"G{i:015d}"
        groups.append({"id": gid, "name": name, "members": sorted(members)})
        actual.append(Group(id=gid, name=name, members=members))
        managed[key] = ManagedGroup(key, gid, AppliedState(name, None, None, members, False))
        if kind == 1:  # rename
            desired[key] = DesiredGroup(key=key, name=f"{name} (renamed)", members=members)
        elif kind == 2:  # member added
            extra = pool[(i * MEMBERS + MEMBERS) % POOL]
            desired[key] = DesiredGroup(key=key, name=name, members=members | {extra})
        else:  # member removed
            desired[key] = DesiredGroup(key=key, name=name, members=members - {min(members)})
    seed = {"contacts": [{"username": u} for u in pool], "groups": groups}
    return Workload(seed, desired, actual, managed)


@contextmanager
def emulator(seed_path: Path) -> Iterator[tuple[str, httpx.Client, int]]:
    """`groupsync emulator` on a free 127.0.0.1 port: (API base URL, admin HTTP client, pid)."""
    env = {
        **os.environ,
        "GROUPSYNC_EMULATOR_TOKEN": TOKEN,
        "GROUPSYNC_EMULATOR_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    cmd = [sys.executable, "-m", "groupsync", "emulator", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--seed", str(seed_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(STARTUP_TIMEOUT_S):
                raise SystemExit("the emulator did not start")
        match = re.search(r"(http://127\.0\.0\.1:\d+)/v1", proc.stdout.readline())
        if match is None:
            raise SystemExit("the emulator did not say where it listens")
        root = match.group(1)
        admin = httpx.Client(
            base_url=f"{root}/_admin",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        with admin:
            yield f"{root}/v1", admin, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def cpu_of(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from /proc; 0 where there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def set_faults(admin: httpx.Client, **faults: Any) -> None:
    admin.put("/faults", json=faults).raise_for_status()


def counters(admin: httpx.Client) -> tuple[list[dict[str, Any]], int]:
    """Request counts by (method, path, status), and the most requests in flight at once."""
    response = admin.get("/counters")
    response.raise_for_status()
    body = response.json()
    return body["counts"], body["max_in_flight"]


async def timed_apply(
    plan: Plan,
    desired: dict[str, DesiredGroup],
    client: Client,
    journal: Journal,
    seen_ids: set[str],
) -> tuple[ApplyResult, dict[str, float]]:
    """Wall time, and the CPU time of this thread: the event loop, i.e. groupsync itself."""
    run_id = journal.start_run(trigger="benchmark", mode="apply", spec_digest="benchmark")
    wall, cpu = time.perf_counter(), time.thread_time()
    result = await apply_plan(plan, desired, client, journal, run_id, seen_ids=seen_ids)
    times = {"wall_s": time.perf_counter() - wall, "cpu_s": time.thread_time() - cpu}
    counts = {"applied": result.applied, "failed": result.failed}
    journal.finish_run(run_id, outcome="applied", counts=counts)
    return result, times


async def read_account(base_url: str) -> list[Group]:
    fast = Limits(max_requests_per_s=1000)
    async with Client(base_url, Secret(TOKEN), limits=fast, read_only=True) as c:
        return await c.list_all_groups()


def run(s: Scenario, workdir: Path, journal_dir: Path) -> dict[str, Any]:
    w = workload(s.changes)
    plan = compute_plan(w.desired, w.actual, w.managed)
    if len(plan.changes) != s.changes or plan.errors or plan.refused:
        raise SystemExit(f"{s.name}: plan has {len(plan.changes)} changes, not {s.changes}")
    seed_path = workdir / f"{s.name}-seed.json"
    seed_path.write_text(json.dumps(w.seed), encoding="utf-8")
    with (
        emulator(seed_path) as (base_url, admin, pid),
        Journal.open(journal_dir / f"{s.name}.db") as j,
    ):
        set_faults(admin, latency_s=s.latency_s, rate_limit_per_s=s.emulator_rate)
        admin.post("/reset", json={}).raise_for_status()
        limits = Limits(max_concurrency=CONCURRENCY, max_requests_per_s=s.client_rate)
        client = Client(base_url, Secret(TOKEN), limits=limits)

        async def go() -> tuple[ApplyResult, dict[str, float]]:
            async with client, asyncio.timeout(s.ideal_s * 4 + 60):
                seen = {g.id for g in w.actual}
                return await timed_apply(plan, w.desired, client, j, seen)

        load_before, emulator_cpu = os.getloadavg()[0], cpu_of(pid)
        result, times = asyncio.run(go())
        load_after, emulator_cpu = os.getloadavg()[0], cpu_of(pid) - emulator_cpu
        counts, max_in_flight = counters(admin)
        set_faults(admin, latency_s=0, rate_limit_per_s=None)
        after = compute_plan(w.desired, asyncio.run(read_account(base_url)), j.managed())
    return {
        "scenario": s,
        **times,
        "load": (load_before, load_after),
        "emulator_cpu_s": emulator_cpu,
        "applied": result.applied,
        "failed": result.failed,
        "failures": result.failures[:3],
        "writes": sum(c["count"] for c in counts if c["method"] in WRITES),
        "reads": sum(c["count"] for c in counts if c["method"] == "GET"),
        "emulator_429": sum(c["count"] for c in counts if c["status"] == 429),
        "retries": client.stats.retries,
        "max_in_flight": max_in_flight,
        "converged": after.empty,
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | wall | ideal | ratio (< 1.25) | writes/change | retries (client) | "
        "429s (emulator) | failed | converged | max in flight | CPU: groupsync / emulator | "
        "load avg | "
        "result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s: Scenario = r["scenario"]
        ratio = r["wall_s"] / s.ideal_s
        checks = {
            "time": ratio < RATIO_TARGET,
            "failures": r["failed"] == 0 and r["applied"] == s.changes,
            "writes": r["writes"] == s.changes + r["retries"] and r["reads"] == 0,
            "converged": r["converged"],
        }
        missed = [k for k, ok in checks.items() if not ok]
        limit = f"emulator {s.emulator_rate:g}/s, " if s.emulator_rate else ""
        label = (
            f"{s.name}: {s.changes:,} changes, {s.latency_s * 1000:g} ms latency, "
            f"{limit}client {s.client_rate:g}/s x {CONCURRENCY}"
        )
        lines.append(
            f"| {label} | {r['wall_s']:.2f} s | {s.ideal_s:.2f} s | {ratio:.2f} | "
            f"{r['writes'] / s.changes:.3f} ({r['writes']} writes, {r['reads']} reads) | "
            f"{r['retries']} | {r['emulator_429']} | {r['failed']} | "
            f"{'yes' if r['converged'] else 'NO'} | {r['max_in_flight']} | "
            f"{r['cpu_s']:.2f} s ({r['cpu_s'] / s.changes * 1000:.1f} ms/change) / "
            f"{r['emulator_cpu_s']:.2f} s | "
            f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} | "
            f"{verdict(not missed)}{' (' + ', '.join(missed) + ')' if missed else ''} |"
        )
        if r["failures"]:
            lines.append(f"<!-- first failures: {r['failures']} -->")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="100 changes, and 30 at 30 req/s (smoke)"
    )
    parser.add_argument(
        "--journal-dir",
        type=Path,
        help="put the journals here instead of the temp dir (e.g. /dev/shm: no fsync cost)",
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rate = 30.0 if args.quick else 10.0  # the smoke run's limit: the same checks in 1 s, not 3
    scenarios = [
        Scenario("a", 1000 // scale, 0.020, 1000.0, None),
        Scenario("b", 300 // scale, 0.020, rate, rate),
    ]
    with tempfile.TemporaryDirectory(prefix="groupsync-bench-") as tmp:
        journal_dir = args.journal_dir or Path(tmp)
        with tempfile.TemporaryDirectory(prefix="groupsync-bench-", dir=journal_dir) as jdir:
            print(f"emulator in its own process; journals in {jdir}")
            results = [run(s, Path(tmp), Path(jdir)) for s in scenarios]
    print(report(results))


if __name__ == "__main__":
    main()
