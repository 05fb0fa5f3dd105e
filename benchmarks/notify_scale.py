"""Messages at scale: does an apply that welcomes every group it creates stay at the API's rate?

Target (issue 14): an apply that creates 500 groups and posts 500 welcomes, with the client at
api.max_requests_per_s=10 against an emulator that rate-limits at 10 req/s (429 past it), takes
within 1.1x of (writes + messages) / 10 s. Every welcome goes to another conversation, so the
1-per-second pacing per conversation costs nothing here; the client's limiter is what bounds it.

One whole `reconcile` is timed (read, plan, apply, post, journal) with a real SQLite journal,
against `groupsync emulator` in its own process (see apply_scale.py for why). Afterwards every
group must have exactly one welcome and the journal's outbox must say `sent` for each.

Run from the repository root: `python benchmarks/notify_scale.py [--quick]` (--quick: 50 groups
at 50 req/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from apply_scale import TOKEN, counters, cpu_of, emulator, set_faults
from groupsync.config import load_settings
from groupsync.journal import Journal
from groupsync.reconcile import RunOptions, Session
from groupsync.secret import Secret
from groupsync.spec import load_spec

RATE = 10.0  # the API's limit, requests per second
QUICK_RATE = 50.0  # the smoke run's: the same checks in a fifth of the time
RATIO_TARGET = 1.1
LATENCY_S = 0.02


def write_campus(folder: Path, n: int, base_url: str, rate: float) -> Path:
    """The spec (n groups of one member each, a welcome) and a config; the seed has the users."""
    users = [f"s{i:04d}" for i in range(n)]
    spec = {
        "notify": {"welcome": "Welcome to {name}, {members}!"},
        "groups": {
            f"c{i:04d}": {"name": f"Course {i:04d}", "members": [users[i]]} for i in range(n)
        },
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    config = folder / "groupsync.yaml"
    settings = {
        "api": {"base_url": base_url, "max_requests_per_s": rate, "max_concurrency": 8},
        "spec": {"path": "spec.yaml"},
        "journal": {"path": "journal.db"},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def run(n: int, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="groupsync-notify-bench-") as tmp:
        folder = Path(tmp)
        (folder / "seed.yaml").write_text(
            yaml.safe_dump(
                {"contacts": [{"username": f"s{i:04d}"} for i in range(n)], "groups": []}
            ),
            encoding="utf-8",
        )
        with emulator(folder / "seed.yaml") as (base_url, admin, pid):
            settings = load_settings(write_campus(folder, n, base_url, rate))
            set_faults(admin, latency_s=LATENCY_S, rate_limit_per_s=rate)
            spec = load_spec(settings.spec.path)
            cpu_before = cpu_of(pid)

            async def go() -> float:
                with Journal.open(settings.journal.path) as journal:
                    wall = time.perf_counter()
                    session = Session(settings, Secret(TOKEN), journal)
                    report = await session.reconcile(spec, RunOptions(trigger="benchmark"))
                    assert report.result is not None and report.result.applied == n, report
                    return time.perf_counter() - wall

            wall_s = asyncio.run(go())
            emulator_cpu_s = cpu_of(pid) - cpu_before
            counts, _ = counters(admin)
            posted = admin.get("/messages").json()["data"]
        with Journal.open(folder / "journal.db") as journal:
            [last] = journal.history(limit=1)
        by: Counter[tuple[str, str, int]] = Counter()
        for row in counts:
            by[(row["method"], row["path"], row["status"])] += row["count"]
        writes = sum(v for (m, p, s), v in by.items() if m == "POST" and p == "/v1/groups")
        messages = sum(v for (m, p, s), v in by.items() if m == "POST" and p == "/v1/messages")
        ideal = (n + n) / rate
        return {
            "groups": n,
            "wall_s": round(wall_s, 2),
            "ideal_s": ideal,
            "ratio": round(wall_s / ideal, 3),
            "create_posts": writes,
            "message_posts": messages,
            "throttled_429": sum(v for (m, p, s), v in by.items() if s == 429),
            "welcomes_seen": len(posted),
            "one_per_group": len({m["conversation_id"] for m in posted}) == n == len(posted),
            "outbox_sent": sum(1 for m in last.messages if m.status == "sent"),
            "emulator_cpu_s": round(emulator_cpu_s, 2),
            "load_avg": os.getloadavg()[0],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 groups at 50 req/s (smoke)")
    args = parser.parse_args()
    rate = QUICK_RATE if args.quick else RATE
    result = run(50 if args.quick else 500, rate)
    ok = result["ratio"] <= RATIO_TARGET and result["one_per_group"]
    print("| measure | value |")
    print("|---|---:|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    print(
        f"\ntarget: within {RATIO_TARGET}x of (writes + messages) at {rate:g} req/s: "
        + ("met" if ok else "MISSED")
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
