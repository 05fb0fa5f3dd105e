"""GET /state at the API's limit: 100,000 managed groups served in under 1 s, the serving
process growing by under 100 MiB of RSS meanwhile.

The journal is a real file with 100,000 managed groups of 10 members each (written in bulk with
the journal's own JSON form, so setup takes seconds, not minutes). The daemon's HTTP service
(`HttpService`, the code `groupsync run` starts) runs in a child process of its own on
127.0.0.1, so its RSS is the service's and nothing of this process's. Before the request the
child's peak RSS is reset to its current RSS (`/proc/<pid>/clear_refs`, 5); after it, VmHWM
minus that is what serving cost. The answer is checked: it loads as a snapshot of 100,000 groups.

Also measured: a second full GET (the journal's pages now in the page cache), and a GET with
If-None-Match answered 304 without building the snapshot.

Run from the repository root: `python benchmarks/state_serve.py [--quick]` (--quick: 10,000).
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from groupsync.canonical import canonical_json
from groupsync.journal import Journal, applied_to_dict, now_iso
from groupsync.outcomes import RunOutcome
from groupsync.plan import AppliedState
from groupsync.state import load_snapshot

TOKEN = "bench-http-token"
MEMBERS = 10
TARGET_S = 1.0
TARGET_MIB = 100.0
MAX_BODY = 1024 * 1024 * 1024

CHILD = """
import sys, time
from pathlib import Path
from groupsync.httpservice import HttpService
from groupsync.metrics import Metrics
from groupsync.secret import Secret
from groupsync.statuspage import DaemonView
token = Secret(sys.argv[2])
service = HttpService(Metrics(max_age_s=60), Path(sys.argv[1]), DaemonView, token=token)
print(service.start("127.0.0.1:0"), flush=True)
sys.stdin.read()  # until the parent closes it
service.close()
"""


def make_journal(path: Path, groups: int) -> None:
    with Journal.open(path) as journal:
        run = journal.start_run(trigger="startup", mode="apply", spec_digest="bench")
        journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={"create": groups})
    now = now_iso()
    rows = []
    for i in range(groups):
        members = frozenset(f"user{(i * 7 + m) % 50_000:05d}" for m in range(MEMBERS))
        applied = AppliedState(f"Group {i:06d}", f"Class {i}", None, members, False)
        rows.append(
            (
                f"g{i:06d}",
                f"grp_{i:06d}",
                applied.name,
                now,
                now,
                canonical_json(applied_to_dict(applied)),
            )
        )
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO groups VALUES (?, ?, ?, ?, ?, ?)", rows)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 groups")
    groups = 10_000 if parser.parse_args().quick else 100_000
    with tempfile.TemporaryDirectory(prefix="groupsync-state-") as tmp:
        path = Path(tmp) / "groupsync.db"
        started = time.monotonic()
        make_journal(path, groups)
        print(
            f"journal: {groups:,} groups x {MEMBERS} members, "
            f"{path.stat().st_size / 2**20:.0f} MiB, built in {time.monotonic() - started:.1f} s"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), TOKEN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            url = f"http://127.0.0.1:{port}/state"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            before = rss_kib(child.pid, "VmRSS")
            Path(f"/proc/{child.pid}/clear_refs").write_text("5")
            t0 = time.monotonic()
            r = httpx.get(url, headers=auth, timeout=60)
            first_s = time.monotonic() - t0
            grew_mib = (rss_kib(child.pid, "VmHWM") - before) / 1024
            assert r.status_code == 200, r.status_code
            assert load_snapshot(r.content, url, max_bytes=MAX_BODY).managed_count == groups
            t0 = time.monotonic()
            again = httpx.get(url, headers=auth, timeout=60)
            second_s = time.monotonic() - t0
            t0 = time.monotonic()
            cached = httpx.get(url, headers=auth | {"If-None-Match": r.headers["etag"]}, timeout=60)
            not_modified_s = time.monotonic() - t0
            assert again.content == r.content and cached.status_code == 304
        finally:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait(30)
    size = len(r.content) / 2**20
    ok_time, ok_rss = first_s < TARGET_S, grew_mib < TARGET_MIB
    print(
        f"GET /state, {groups:,} groups ({size:.1f} MiB): first {first_s:.3f} s, "
        f"again {second_s:.3f} s, 304 {not_modified_s * 1000:.1f} ms "
        f"(target < {TARGET_S:.0f} s): {'PASS' if ok_time else 'MISS'}"
    )
    print(
        f"serving process RSS: {before / 1024:.0f} MiB before, grew {grew_mib:.1f} MiB "
        f"at peak (target < {TARGET_MIB:.0f} MiB): {'PASS' if ok_rss else 'MISS'}"
    )
    return 0 if ok_time and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
