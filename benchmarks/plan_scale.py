"""Plan at scale: is `groupsync plan` cheap at 10,000 groups, and the diff at 100,000?

The cost model (ARCHITECTURE.md, "Cost model") says a plan costs exactly ceil(active/100) +
ceil(archived/100) list calls (contacts only when a new username must be checked) and a diff
linear in groups plus memberships. This measures both against these targets:

- the diff (`compute_plan`) of 10,000 groups x 20 members in under 0.5 s of CPU;
- the diff of 100,000 groups x 10 members in under 5 s of CPU and 1 GiB of peak RSS;
- API calls equal to the minimum.

The 10,000-group run goes the way `groupsync plan` does: the spec file through `load_spec`,
then `reconcile.plan_with` (a read-only `Client` listing active and archived groups with
limit=100, then `compute_plan`) against the emulator on 127.0.0.1. The emulator is seeded
through `emu.state`, not HTTP, so setup stays fast. The client's rate limit is raised to
1,000 requests/s so the benchmark measures groupsync rather than the default 10 req/s budget.

The 100,000-group diff runs in a child process (this script with --diff-only) on synthetic
`Group` values, so its peak RSS is the diff's own footprint (interpreter, inputs and plan), not
this process's emulator and 10,000-group state. The child reads its peak from VmHWM in
/proc/self/status: Linux carries ru_maxrss across fork and exec, so the child's ru_maxrss would
report the parent's size whenever that is larger.

Both accounts carry 2% drift of every kind: renames and member additions and
removals, half made in the spec (cause `spec`), half by hand in the account (cause `drift`).
The plan is checked to hold exactly those changes, so a fast wrong answer cannot pass.

Run from the repository root: `python benchmarks/plan_scale.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupsync import reconcile
from groupsync.config import Settings, policy_from
from groupsync.emulator import serve_emulator
from groupsync.models import Group
from groupsync.plan import AppliedState, ManagedGroup, Plan, compute_plan, usernames_to_verify
from groupsync.reconcile import Planned
from groupsync.secret import Secret
from groupsync.spec import DesiredGroup, Spec, load_spec

TOKEN = "bench-token"
PAGE = 100
RATE_PER_S = 1000.0  # high on purpose: measure groupsync, not the default 10 req/s budget
DRIFT_EVERY = 50  # one group in 50 drifts: 2%
ARCHIVED_EVERY = 10  # one group in 10 is archived, so both listings are paged
PLAN_TIMEOUT_S = 120.0
CHILD_TIMEOUT_S = 120.0
DIFF_CPU_TARGET_10K_S = 0.5
DIFF_CPU_TARGET_100K_S = 5.0
RSS_TARGET_100K_MIB = 1024.0


@dataclass(frozen=True)
class Account:
    """One synthetic account: the spec's view, the API's view and the journal's view."""

    desired: dict[str, DesiredGroup]
    actual: list[Group]
    managed: dict[str, ManagedGroup]
    drifted: int


def build_account(groups: int, members: int) -> Account:
    """Deterministic account with 2% drift; members come from a pool every group draws on, so
    every username the spec adds already shows in some group (no contacts read needed)."""
    pool = max(members * 10, groups * members // 4)
    desired: dict[str, DesiredGroup] = {}
    actual: list[Group] = []
    managed: dict[str, ManagedGroup] = {}
    drifted = 0
    for i in range(groups):
        key, gid, name = f"g{i:06d}", f"G{i:015d}", f"Group {i:06d}"
        usernames = frozenset(f"u{(i * members + j) % pool:06d}" for j in range(members))
        extra = f"u{(i * members + members) % pool:06d}"  # another group's member, not ours
        dropped = min(usernames)
        archived = i % ARCHIVED_EVERY == ARCHIVED_EVERY - 1
        spec_name, spec_members, api_name, api_members = name, usernames, name, usernames
        if i % DRIFT_EVERY == 0:
            drifted += 1
            kind = (i // DRIFT_EVERY) % 6
            if kind == 0:
                spec_name = f"{name} (renamed)"
            elif kind == 1:
                api_name = f"{name} (edited by hand)"
            elif kind == 2:
                spec_members = usernames | {extra}
            elif kind == 3:
                api_members = usernames - {dropped}
            elif kind == 4:
                spec_members = usernames - {dropped}
            else:
                api_members = usernames | {extra}
        desired[key] = DesiredGroup(
            key=key, name=spec_name, members=spec_members, archived=archived
        )
        actual.append(
            Group(
                id=gid,
                name=api_name,
                members=api_members,
                archived_at=1_700_000_000 if archived else None,
                created_at=1_700_000_000,
            )
        )
        applied = AppliedState(name, None, None, usernames, archived)
        managed[key] = ManagedGroup(key, gid, applied)
    return Account(desired, actual, managed, drifted)


def check_plan(plan: Plan, account: Account) -> None:
    """A benchmark of a wrong plan measures nothing: one change per drifted group, no more."""
    keys = [c.key for c in plan.changes]
    if len(keys) != account.drifted or len(set(keys)) != len(keys):
        raise SystemExit(f"plan has {len(keys)} changes, expected {account.drifted}")
    if plan.errors or plan.refused:
        raise SystemExit(f"plan has errors {plan.errors[:3]} / refusals {plan.refusals}")


def write_spec(path: Path, desired: dict[str, DesiredGroup]) -> None:
    """Plain block YAML, written directly: `dump_spec` (PyYAML's emitter) takes ~25 s here."""
    lines = ["groups:"]
    for key in sorted(desired):
        d = desired[key]
        lines += [f"  {key}:", f"    name: {json.dumps(d.name)}", "    members:"]
        lines += [f"    - {u}" for u in sorted(d.members or ())]
        if d.archived:
            lines.append("    archived: true")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def own_peak_rss_mib() -> float:
    """This process image's own peak RSS (VmHWM), where ru_maxrss may include the parent's."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return peak_rss_mib()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else peak_rss_mib()


def pages(n: int) -> int:
    """List calls for n objects: an empty listing still costs its one call."""
    return max(1, math.ceil(n / PAGE))


# --- the diff alone, in a child process --------------------------------------------------------


def diff_only(groups: int, members: int) -> dict[str, Any]:
    """Child side: build synthetic inputs, plan once, report CPU, wall and peak RSS."""
    account = build_account(groups, members)
    rss_inputs = own_peak_rss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    plan = compute_plan(account.desired, account.actual, account.managed)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    check_plan(plan, account)
    return {
        "groups": groups,
        "members": members,
        "changes": len(plan.changes),
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_inputs_mib": rss_inputs,
        "rss_peak_mib": own_peak_rss_mib(),
    }


def run_diff_child(groups: int, members: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--diff-only", str(groups), str(members)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise SystemExit(f"diff child failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- `groupsync plan` against the emulator -----------------------------------------------------


def timed_compute_plan(into: dict[str, float]) -> Callable[..., Plan]:
    """compute_plan as plan_with calls it, with the CPU time of that one call recorded.

    The emulator thread is idle by then (every list call has returned), so process time is the
    diff's own.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Plan:
        start = time.process_time()
        try:
            return compute_plan(*args, **kwargs)
        finally:
            into["diff_cpu_s"] = time.process_time() - start

    return wrapper


async def plan(settings: Settings, spec: Spec, managed: dict[str, ManagedGroup]) -> Planned:
    """What `groupsync plan` does, with the managed map given rather than read from a journal."""
    async with reconcile.Session(settings, Secret(TOKEN)).reader() as client:
        return await reconcile.plan_with(client, spec, managed, policy_from(settings))


def plan_against_emulator(groups: int, members: int, workdir: Path) -> dict[str, Any]:
    account = build_account(groups, members)
    out: dict[str, Any] = {"groups": groups, "members": members}

    spec_path = workdir / "spec.yaml"
    write_spec(spec_path, account.desired)
    out["spec_mib"] = spec_path.stat().st_size / 2**20
    cpu, wall = time.process_time(), time.perf_counter()
    spec = load_spec(spec_path)
    out["load_cpu_s"], out["load_wall_s"] = time.process_time() - cpu, time.perf_counter() - wall
    if spec.groups != account.desired:
        raise SystemExit("load_spec did not read back the spec that was written")

    with serve_emulator(token=TOKEN) as emu:
        start = time.perf_counter()
        for g in account.actual:
            emu.state.add_group(
                g.name,
                members=sorted(g.members),
                archived=g.archived,
                id=g.id,
                created_at=g.created_at,
            )
        out["seed_s"] = time.perf_counter() - start
        emu.reset_counters()

        settings = Settings.model_validate(
            {
                "api": {
                    "base_url": emu.base_url,
                    "max_concurrency": 8,
                    "max_requests_per_s": RATE_PER_S,
                },
                "spec": {"path": str(spec_path)},
            }
        )
        timings: dict[str, float] = {}
        real = reconcile.compute_plan
        reconcile.compute_plan = timed_compute_plan(timings)
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            planned = asyncio.run(
                asyncio.wait_for(plan(settings, spec, account.managed), PLAN_TIMEOUT_S)
            )
            out["plan_wall_s"] = time.perf_counter() - wall
            out["plan_cpu_s"] = time.process_time() - cpu
        finally:
            reconcile.compute_plan = real
        check_plan(planned.plan, account)

        archived = sum(1 for g in account.actual if g.archived)
        out["active"], out["archived"] = len(account.actual) - archived, archived
        out["list_calls"] = emu.count(method="GET", path="/v1/groups")
        out["contact_calls"] = emu.count(path="/v1/contacts")
        out["total_calls"] = emu.count()
        out["min_calls"] = pages(out["active"]) + pages(archived)
        if usernames_to_verify(spec.groups, account.actual):  # a username must be checked
            out["min_calls"] += pages(len(emu.state.contacts()))
        out["changes"] = len(planned.plan.changes)
        out["diff_cpu_s"] = timings["diff_cpu_s"]
        out["rss_mib"] = peak_rss_mib()
    return out


# --- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(p: dict[str, Any], d: dict[str, Any]) -> str:
    size = f"{p['groups']:,} groups x {p['members']}"
    big = f"{d['groups']:,} groups x {d['members']}"
    calls = (
        f"{p['total_calls']} ({p['list_calls']} group pages: {p['active']:,} active + "
        f"{p['archived']:,} archived; {p['contact_calls']} contacts; "
        f"{p['total_calls'] - p['list_calls'] - p['contact_calls']} other)"
    )
    rows = [
        (
            f"load_spec, {size} ({p['spec_mib']:.1f} MiB file)",
            f"{p['load_wall_s']:.2f} s wall, {p['load_cpu_s']:.2f} s CPU",
            "-",
            "info",
        ),
        (f"seed emulator via emu.state, {size}", f"{p['seed_s']:.2f} s", "-", "info"),
        (
            f"plan (plan_with: list + diff), {size}, {p['changes']} changes",
            f"{p['plan_wall_s']:.2f} s wall, {p['plan_cpu_s']:.2f} s CPU",
            "-",
            "info",
        ),
        (
            f"diff CPU (compute_plan), {size}",
            f"{p['diff_cpu_s']:.3f} s",
            f"< {DIFF_CPU_TARGET_10K_S} s",
            verdict(p["diff_cpu_s"] < DIFF_CPU_TARGET_10K_S),
        ),
        (
            "API calls for the plan",
            calls,
            f"= minimum {p['min_calls']}",
            verdict(p["total_calls"] == p["min_calls"]),
        ),
        (
            "peak RSS, this process (emulator + its state + client + plan)",
            f"{p['rss_mib']:.0f} MiB",
            "-",
            "info",
        ),
        (
            f"diff CPU (compute_plan), {big}, {d['changes']:,} changes, child process",
            f"{d['cpu_s']:.3f} s ({d['wall_s']:.3f} s wall)",
            f"< {DIFF_CPU_TARGET_100K_S} s",
            verdict(d["cpu_s"] < DIFF_CPU_TARGET_100K_S),
        ),
        (
            f"peak RSS of that child (inputs alone: {d['rss_inputs_mib']:.0f} MiB)",
            f"{d['rss_peak_mib']:.0f} MiB",
            f"< {RSS_TARGET_100K_MIB:.0f} MiB",
            verdict(d["rss_peak_mib"] < RSS_TARGET_100K_MIB),
        ),
    ]
    lines = ["| measure | value | target | result |", "|---|---|---|---|"]
    lines += [f"| {m} | {v} | {t} | {r} |" for m, v, t, r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 groups (smoke)")
    parser.add_argument(
        "--diff-only", nargs=2, type=int, metavar=("GROUPS", "MEMBERS"), help=argparse.SUPPRESS
    )  # the child process's entry point
    args = parser.parse_args()
    if args.diff_only:
        print(json.dumps(diff_only(*args.diff_only)))
        return
    small, big = ((1_000, 20), (10_000, 10)) if args.quick else ((10_000, 20), (100_000, 10))
    with tempfile.TemporaryDirectory(prefix="groupsync-bench-") as tmp:
        p = plan_against_emulator(*small, Path(tmp))
    d = run_diff_child(*big)
    print(
        f"client max_requests_per_s={RATE_PER_S:.0f} (high on purpose), max_concurrency=8; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(report(p, d))


if __name__ == "__main__":
    main()
