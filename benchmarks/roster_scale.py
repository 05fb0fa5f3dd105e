"""Rosters at scale: does a campus-sized OneRoster export load and plan cheaply?

Issue 13's targets, for a generated export of 5,000 classes, 20,000 users and 150,000
enrollments (1 teacher and 29 students per class):

- `load_spec` (reading and checking the four CSV files, generating 5,000 groups) plus the plan
  (`reconcile.plan_with`: the group listing from the emulator over HTTP, then `compute_plan`)
  in under 2 s of CPU and 500 MiB of peak RSS;
- a no-op plan makes only the list calls: ceil(5,000/100) active pages + 1 archived page, no
  contacts (every username already shows in some group).

The measured part runs in a child process (this script with --child), so its CPU and peak RSS
(VmHWM) are the load and plan's own, not the emulator's: the parent serves the emulator,
seeded through `emu.state` with the groups as the last apply left them, and counts the calls.

Run from the repository root: `python benchmarks/roster_scale.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from groupsync import reconcile
from groupsync.config import Settings, policy_from
from groupsync.emulator import serve_emulator
from groupsync.plan import AppliedState, ManagedGroup
from groupsync.reconcile import Planned
from groupsync.secret import Secret
from groupsync.spec import Spec, load_spec

TOKEN = "bench-token"
PAGE = 100
PER_CLASS = 30  # 1 teacher + 29 students
CPU_TARGET_S = 2.0
RSS_TARGET_MIB = 500.0
CHILD_TIMEOUT_S = 300.0
SPEC = """\
rosters:
  sis: {oneroster: export}
generate:
  - from: sis.classes
    where: {classType: scheduled}
    key: "class-{classCode}"
    name: "{title} ({classCode})"
    description: "Term {termSourcedIds}"
    members: [teacher, student]
groups: {}
"""


def write_export(folder: Path, classes: int, users: int) -> Path:
    """folder/export (a OneRoster bulk export) and folder/spec.yaml; returns the spec."""
    export = folder / "export"
    export.mkdir()

    def write(name: str, header: str, rows: Any) -> None:
        with (export / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, lineterminator="\r\n")
            out.writerow(header.split(","))
            out.writerows(rows)

    write(
        "manifest",
        "propertyName,value",
        [["oneroster.version", "1.1"]]
        + [[f"file.{n}", "bulk"] for n in ("classes", "users", "enrollments")],
    )
    write(
        "classes",
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,"
        "location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods",
        (
            [
                f"c{i}",
                "active",
                "",
                f"Section {i}",
                "",
                f"k{i}",
                f"S{i:05d}",
                "scheduled",
                "",
                "s1",
                "t1,t2" if i % 2 else "t1",
                "",
                "",
                "1,2",
            ]
            for i in range(classes)
        ),
    )
    write(
        "users",
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,"
        "givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,"
        "password",
        (
            [
                f"u{i}",
                "active",
                "",
                "true",
                "s1",
                "student",
                f"user{i:05d}",
                "",
                "",
                "",
                "",
                "",
                f"user{i:05d}@uni.example.edu",
                "",
                "",
                "",
                "",
                "",
            ]
            for i in range(users)
        ),
    )
    write(
        "enrollments",
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,"
        "primary,beginDate,endDate",
        (
            [
                f"e{c}-{j}",
                "active",
                "",
                f"c{c}",
                "s1",
                f"u{(c * PER_CLASS + j * 7) % users}",
                "teacher" if j == 0 else "student",
                "",
                "",
                "",
            ]
            for c in range(classes)
            for j in range(PER_CLASS)
        ),
    )
    spec = folder / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def group_id(key: str) -> str:
    return "G" + key.replace("-", "")


def own_peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text(encoding="ascii")
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


async def _plan(settings: Settings, spec: Spec, managed: dict[str, ManagedGroup]) -> Planned:
    """What `groupsync plan` does once the spec is loaded: list over HTTP, then diff."""
    async with reconcile.Session(settings, Secret(TOKEN)).reader() as client:
        return await reconcile.plan_with(client, spec, managed, policy_from(settings))


def child(spec_path: Path, base_url: str) -> dict[str, Any]:
    """Load and plan as `groupsync plan` does; the journal's mapping is built from the spec."""
    settings = Settings.model_validate(
        {
            "api": {"base_url": base_url, "max_requests_per_s": 1000.0},
            "spec": {"path": str(spec_path)},
        }
    )
    cpu, wall = time.process_time(), time.perf_counter()
    spec = load_spec(spec_path)
    load_cpu, load_wall = time.process_time() - cpu, time.perf_counter() - wall
    managed = {
        key: ManagedGroup(
            key,
            group_id(key),
            AppliedState(g.name, g.description, None, g.members, False),  # type: ignore[arg-type]
        )
        for key, g in spec.groups.items()
    }
    cpu2, wall2 = time.process_time(), time.perf_counter()
    planned = asyncio.run(_plan(settings, spec, managed))
    plan_cpu, plan_wall = time.process_time() - cpu2, time.perf_counter() - wall2
    plan = planned.plan
    if plan.changes or plan.errors or plan.refused:
        raise SystemExit(f"expected a no-op plan: {plan.counts} {plan.refusals}")
    [sis] = spec.rosters
    return {
        "groups": len(spec.groups),
        "members": sis.members,
        "rows": sis.rows,
        "load_cpu_s": load_cpu,
        "load_wall_s": load_wall,
        "plan_cpu_s": plan_cpu,
        "plan_wall_s": plan_wall,
        "rss_mib": own_peak_rss_mib(),
    }


def measure(classes: int, users: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="roster-scale-") as tmp:
        start = time.perf_counter()
        spec_path = write_export(Path(tmp), classes, users)
        spec = load_spec(spec_path)
        out: dict[str, Any] = {"write_s": time.perf_counter() - start}
        with serve_emulator(token=TOKEN) as emu:
            for i in range(users):
                emu.state.add_contact(f"user{i:05d}")
            for key, g in spec.groups.items():
                emu.state.add_group(
                    g.name,
                    members=sorted(g.members or ()),
                    description=g.description,  # type: ignore[arg-type]
                    id=group_id(key),
                )
            emu.reset_counters()
            cmd = [sys.executable, __file__, "--child", str(spec_path), emu.base_url]
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr}")
            out |= json.loads(done.stdout.strip().splitlines()[-1])
            out["calls"] = emu.count()
            out["list_calls"] = emu.count(method="GET", path="/v1/groups")
            out["min_calls"] = math.ceil(classes / PAGE) + 1  # active pages + the empty archive
    out["classes"], out["users"] = classes, users
    return out


def report(r: dict[str, Any]) -> str:
    cpu = r["load_cpu_s"] + r["plan_cpu_s"]
    enrollments = r["rows"] - r["classes"] - r["users"]
    size = f"{r['classes']:,} classes, {r['users']:,} users, {enrollments:,} enrollments"
    rows = [
        ("export", f"{size}; {r['groups']:,} groups, {r['members']:,} members", "-", "info"),
        (
            "load_spec (read + generate)",
            f"{r['load_cpu_s']:.2f} s CPU, {r['load_wall_s']:.2f} s wall",
            "-",
            "info",
        ),
        (
            "plan (list over HTTP + diff)",
            f"{r['plan_cpu_s']:.2f} s CPU, {r['plan_wall_s']:.2f} s wall",
            "-",
            "info",
        ),
        (
            "load + plan CPU",
            f"{cpu:.2f} s",
            f"< {CPU_TARGET_S} s",
            "PASS" if cpu < CPU_TARGET_S else "MISS",
        ),
        (
            "peak RSS (child)",
            f"{r['rss_mib']:.0f} MiB",
            f"< {RSS_TARGET_MIB:.0f} MiB",
            "PASS" if r["rss_mib"] < RSS_TARGET_MIB else "MISS",
        ),
        (
            "API calls, no-op plan",
            f"{r['calls']} ({r['list_calls']} group pages)",
            f"= minimum {r['min_calls']}",
            "PASS" if r["calls"] == r["min_calls"] else "MISS",
        ),
    ]
    lines = ["| measure | value | target | result |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (smoke test)")
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "BASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return
    classes, users = (500, 2_000) if args.quick else (5_000, 20_000)
    print(report(measure(classes, users)))


if __name__ == "__main__":
    main()
