"""A `groupsync run` subprocess with webhooks on, and an emulator sending it signed events."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import TOKEN
from groupsync.emulator import Emulator, Faults, WebhookTarget, serve_emulator
from groupsync.secret import Secret
from groupsync.webhooksig import HEADER, sign
from helpers import free_port

T = TypeVar("T")
SECRET = "whsec-" + "k3y" * 8  # long enough for the leak check to find pieces of it
USERS = ["ada", "bob", "carol", "dave", "erin"]


def wait_until(check: Callable[[], T | None], timeout: float, what: str, log: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}\n{log}")


def spec_of(n: int, description: str = "") -> dict[str, Any]:
    groups = {}
    for i in range(n):
        group: dict[str, Any] = {"name": f"Group {i:03d}", "members": USERS[: 2 + i % 3]}
        if description:
            group["description"] = description
        groups[f"g{i:03d}"] = group
    return {"groups": groups}


class WebhookDaemon:
    """Emulator (events on) + `groupsync run` (schedule 1h, webhooks enabled), in tmp_path."""

    def __init__(self, tmp_path: Path, groups: int, faults: Faults | None = None) -> None:
        self.dir = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spec = tmp_path / "spec" / "groups.yaml"
        self.spec.parent.mkdir()
        self.spec.write_text(yaml.safe_dump(spec_of(groups)))
        self.journal = tmp_path / "journal.db"
        self.log = tmp_path / "daemon.log"
        self._stack = contextlib.ExitStack()
        self.emu: Emulator = self._stack.enter_context(
            serve_emulator(
                token=TOKEN,
                seed={"contacts": [{"username": u} for u in USERS]},
                faults=faults,
                webhook=WebhookTarget(f"{self.url}/webhooks/ecampus", Secret(SECRET)),
            )
        )
        self.config = tmp_path / "groupsync.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "api": {"base_url": self.emu.base_url, "max_requests_per_s": 1000},
                    "spec": {"path": "spec"},
                    "schedule": {"every": "1h", "jitter": "0s"},
                    "journal": {"path": "journal.db"},
                    "http": {"listen": f"127.0.0.1:{self.port}"},
                    "webhooks": {"enabled": True},
                    "log": {"format": "json"},
                }
            )
        )
        self.created = groups  # the startup run creates every group
        self.baseline: dict[str, float] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def start(self, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        environ |= {"ECAMPUS_TOKEN": TOKEN, "ECAMPUS_WEBHOOK_SECRET": f"old-one,{SECRET}"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "groupsync", "run", "--config", str(self.config)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ | (env or {}),
            )
        self.wait(lambda: self.runs("startup"), "the startup run", timeout=30)
        # The startup's creates send events too (unmanaged or no-ops, by how they race the
        # journal): counted before a test starts, so tests see only their own.
        assert self.emu.webhooks is not None
        self.wait(lambda: self.emu.webhooks.pending() == 0, "the startup's events")  # type: ignore[union-attr]
        self.wait(lambda: sum(self.outcomes().values()) >= self.created, "their counts")
        self.baseline = self.outcomes()

    def new_outcomes(self) -> dict[str, float]:
        """Events by outcome since `start` returned."""
        now = self.outcomes()
        return {
            k: v - self.baseline.get(k, 0) for k, v in now.items() if v != self.baseline.get(k, 0)
        }

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, check: Callable[[], T | None], what: str, timeout: float = 10) -> T:
        def alive() -> T | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode})\n{self.log_text()}")
            return check()

        return wait_until(alive, timeout, what, self.log_text()[-4000:])

    def runs(self, trigger: str) -> list[tuple[int, str]]:
        """(id, outcome) of the finished runs started by `trigger`."""
        if not self.journal.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.journal)) as db:
            try:
                return db.execute(
                    "SELECT id, outcome FROM runs WHERE trigger = ? AND outcome IS NOT NULL"
                    " ORDER BY id",
                    [trigger],
                ).fetchall()
            except sqlite3.OperationalError:  # the daemon is still creating the journal
                return []

    def group(self, name: str) -> dict[str, Any]:
        return next(g for g in self.emu.state.groups() if g["name"] == name)

    def events(self) -> dict[tuple[str, str], float]:
        """groupsync_webhook_events_total by (type, outcome)."""
        text = self.http.get("/metrics").text
        out = {}
        for family in text_string_to_metric_families(text):
            if family.name == "groupsync_webhook_events":
                for s in family.samples:
                    if s.name.endswith("_total"):
                        out[(s.labels["type"], s.labels["outcome"])] = s.value
        return out

    def outcomes(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, outcome), n in self.events().items():
            out[outcome] = out.get(outcome, 0) + n
        return out

    def post(self, event: dict[str, Any], *, secret: str = SECRET) -> httpx.Response:
        body = json.dumps(event).encode()
        signature = sign(Secret(secret), body)
        return self.http.post("/webhooks/ecampus", content=body, headers={HEADER: signature})

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.http.close()
        self._stack.close()


def event(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_" + secrets.token_hex(8), "type": event_type, "payload": payload}


@contextlib.contextmanager
def quiet(emu: Emulator) -> Iterator[None]:
    """Changes made inside send no event (the test sends its own)."""
    listeners = list(emu.state.listeners)
    emu.state.listeners.clear()
    try:
        yield
    finally:
        emu.state.listeners.extend(listeners)
