"""An account at the API's limit, end to end: 100,000 groups x 10 members, the commands a user runs.

Targets (issue 16), on the 2-core VM, over HTTP on 127.0.0.1 with no added latency:

- `validate --spec` under 4 s wall and 300 MiB peak RSS;
- the adopting `apply` (an empty journal, every group pinned by id) under 20 s wall;
- a no-op `plan` under 10 s wall and 512 MiB peak RSS;
- the daemon (`run`) under 300 MiB RSS between runs;
- API calls equal to the minimum: ceil(active/100) + ceil(archived/100) list calls.

Each command runs as `python -m groupsync` in a child process under `/usr/bin/time`, which
reports that child's own peak RSS (Linux carries ru_maxrss across fork and exec, so the
parent's size would leak into a child's ru_maxrss read any other way). The emulator runs in
this process on 127.0.0.1, seeded through `emu.state`; its request counters give the calls per
step. The spec is what `groupsync export` hands back, split into files of 100 groups: every group
pinned by `id:`, with `description: null` and `avatar_url: null`. Members come from a pool of
50,000 usernames (each in about 20 groups), as on a campus.

The daemon is started with a long schedule; its startup run and one run after a SIGHUP (which
loads config and spec again) are awaited through the journal, and its RSS is read from
/proc/PID/status after each.

Run from the repository root: `python benchmarks/account_scale.py [--groups N] [--quick]`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupsync.emulator import serve_emulator

TOKEN = "bench-token"
PAGE = 100
FILE_GROUPS = 100  # groups per spec file, as an export split for review would be
STEP_TIMEOUT_S = 300.0
RUN_WAIT_S = 300.0
ROOT = Path(__file__).resolve().parent.parent
TARGETS = {  # step -> (wall s, peak RSS MiB); None: no target
    "validate --spec": (4.0, 300.0),
    "apply (adopting)": (20.0, None),
    "plan (no-op)": (10.0, 512.0),
}
DAEMON_RSS_TARGET_MIB = 300.0


@dataclass
class Step:
    name: str
    wall_s: float
    cpu_s: float
    peak_mib: float
    calls: int
    exit_code: int


def seed(emu: Any, groups: int, members: int) -> list[tuple[str, str, list[str]]]:
    """The account: (id, name, members) per group, oldest first; none archived."""
    pool = max(members * 10, min(50_000, groups * members // 2))
    out = []
    for i in range(groups):
        usernames = sorted({f"u{(i * 7919 + j * 104_729) % pool:06d}" for j in range(members)})
        name = f"Course {i:06d}"
        group = emu.state.add_group(name, members=usernames, created_at=1_700_000_000 + i)
        out.append((group["id"], name, usernames))
    return out


def write_spec(folder: Path, account: list[tuple[str, str, list[str]]]) -> None:
    """The export's YAML for each group, 100 groups a file."""
    folder.mkdir()
    for start in range(0, len(account), FILE_GROUPS):
        lines = ["groups:"]
        for gid, name, usernames in account[start : start + FILE_GROUPS]:
            key = name.lower().replace(" ", "-")
            lines += [f"  {key}:", f"    name: {name}", "    description: null"]
            lines += ["    avatar_url: null", "    members:"]
            lines += [f"    - {u}" for u in usernames]
            lines.append(f"    id: {gid}")
        path = folder / f"groups-{start // FILE_GROUPS:04d}.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_config(path: Path, base_url: str, spec: Path, journal: Path) -> None:
    path.write_text(
        f"api:\n  base_url: {base_url}\n  token_env: BENCH_TOKEN\n  max_concurrency: 8\n"
        f"  max_requests_per_s: 1000\nspec:\n  path: {spec}\njournal:\n  path: {journal}\n"
        "schedule:\n  every: 1h\n  jitter: 0s\n",
        encoding="utf-8",
    )


def child_env() -> dict[str, str]:
    env = dict(os.environ, BENCH_TOKEN=TOKEN, PYTHONPATH=str(ROOT / "daemon"))
    env.pop("GROUPSYNC_CONFIG", None)
    return env


def timed(name: str, args: list[str], emu: Any, workdir: Path) -> Step:
    """One command under /usr/bin/time: its wall, CPU (user + sys), peak RSS and API calls."""
    emu.reset_counters()
    report = workdir / "time.txt"
    cmd = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(report)]
    cmd += [sys.executable, "-m", "groupsync", *args]
    with (workdir / f"{name.split()[0]}.out").open("w") as out:
        done = subprocess.run(
            cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=child_env(),
            timeout=STEP_TIMEOUT_S, check=False,
        )  # fmt: skip
    if done.returncode not in (0, 2):
        raise SystemExit(f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    wall, user, system, peak_kib = report.read_text().split()[-4:]
    return Step(
        name,
        float(wall),
        float(user) + float(system),
        int(peak_kib) / 1024,
        emu.count(),
        done.returncode,
    )


def finished_runs(journal: Path) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        row = db.execute("SELECT count(*) FROM runs WHERE finished_at IS NOT NULL").fetchone()
    return int(row[0])


def proc_status(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    return {k: int(v) / 1024 for k, v in re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.M)}


def wait_for_run(daemon: subprocess.Popen[str], journal: Path, runs: int) -> float:
    """Wait (bounded) until the journal holds `runs` finished runs; the daemon's RSS then."""
    deadline = time.monotonic() + RUN_WAIT_S
    while _runs_or_zero(journal) < runs:
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not finish run {runs} (exit {daemon.returncode})")
        time.sleep(0.2)
    time.sleep(1.0)  # the run row is written just before the run's objects are dropped
    return proc_status(daemon.pid)["VmRSS"]


def _runs_or_zero(journal: Path) -> int:
    try:
        return finished_runs(journal)
    except sqlite3.Error:  # the daemon is creating or migrating it
        return 0


def daemon_rss(config: Path, journal: Path) -> dict[str, float]:
    """RSS between runs: after the startup run, and after a run that follows a reload."""
    before = finished_runs(journal)
    cmd = [sys.executable, "-m", "groupsync", "run", "--config", str(config)]
    daemon = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(), text=True
    )
    try:
        first = wait_for_run(daemon, journal, before + 1)
        daemon.send_signal(signal.SIGHUP)
        second = wait_for_run(daemon, journal, before + 2)
        peak = proc_status(daemon.pid)["VmHWM"]
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
    return {"first": first, "second": second, "peak": peak}


def pages(n: int) -> int:
    return max(1, math.ceil(n / PAGE))


def verdict(value: float, target: float | None) -> str:
    return "info" if target is None else ("PASS" if value < target else "MISS")


def report(steps: list[Step], daemon: dict[str, float], minimum: int, groups: int) -> str:
    lines = [
        "| step | wall | CPU | peak RSS | calls | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        wall_t, rss_t = TARGETS.get(s.name, (None, None))
        calls_t = minimum if s.calls else 0
        target = " / ".join(
            [f"< {wall_t:.0f} s" if wall_t else "-", f"< {rss_t:.0f} MiB" if rss_t else "-"]
            + ([f"= {calls_t} calls"] if s.calls else [])
        )
        results = [verdict(s.wall_s, wall_t), verdict(s.peak_mib, rss_t)]
        if s.calls:
            results.append("PASS" if s.calls == minimum else "MISS")
        result = "MISS" if "MISS" in results else ("PASS" if "PASS" in results else "info")
        lines.append(
            f"| {s.name} | {s.wall_s:.2f} s | {s.cpu_s:.2f} s | {s.peak_mib:.0f} MiB"
            f" | {s.calls} | {target} | {result} |"
        )
    steady = max(daemon["first"], daemon["second"])
    lines.append(
        f"| daemon between runs (after startup run / after a reload's run; peak"
        f" {daemon['peak']:.0f} MiB) | - | - | {daemon['first']:.0f} / {daemon['second']:.0f} MiB"
        f" | - | < {DAEMON_RSS_TARGET_MIB:.0f} MiB | {verdict(steady, DAEMON_RSS_TARGET_MIB)} |"
    )
    return f"{groups:,} groups\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2,000 groups (smoke)")
    args = parser.parse_args()
    groups = 2_000 if args.quick else args.groups
    with (
        tempfile.TemporaryDirectory(prefix="groupsync-account-") as tmp,
        serve_emulator(token=TOKEN) as emu,
    ):
        work = Path(tmp)
        start = time.perf_counter()
        account = seed(emu, groups, args.members)
        spec, config, journal = work / "spec", work / "groupsync.yaml", work / "journal.db"
        write_spec(spec, account)
        write_config(config, emu.base_url, spec, journal)
        del account
        print(f"seeded and wrote the spec in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        minimum = pages(groups) + pages(0)
        steps = [
            timed("validate --spec", ["validate", "--spec", str(spec)], emu, work),
            timed("apply (adopting)", ["apply", "--yes", "--config", str(config)], emu, work),
            timed("plan (no-op)", ["plan", "--config", str(config)], emu, work),
        ]
        daemon = daemon_rss(config, journal)
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; client 1000 req/s x 8,"
        " emulator in the benchmark's process, no added latency"
    )
    print(report(steps, daemon, minimum, groups))


if __name__ == "__main__":
    main()
