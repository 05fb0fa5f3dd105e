"""What the daemon tests share: an emulator that can go away and come back."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from groupsync.daemon import Daemon
from groupsync.emulator import Emulator, Faults, serve_emulator
from groupsync.httpservice import HttpService
from groupsync.metrics import Metrics
from groupsync.reconcile import RunReport
from groupsync.secret import Secret
from groupsync.statuspage import DaemonView

TOKEN = "test-token"
CONTACTS = ["ada", "bob", "carol", "dave", "erin"]


async def tick(daemon: Daemon) -> RunReport | None:
    """One scheduler tick, as APScheduler fires it; the run's report if the tick started one."""
    before = daemon._current
    await daemon._tick()
    if daemon._current is before or daemon._current is None:
        return None
    return await daemon._current


async def reconcile_now(daemon: Daemon, trigger: str = "manual") -> RunReport | None:
    """One run, started as a tick starts it but whatever the backoff says."""
    return await daemon._start_run(trigger)


def open_service(
    metrics: Metrics,
    journal: Path = Path("no-journal.db"),
    *,
    token: Secret | None = None,
    view: DaemonView | None = None,
) -> HttpService:
    """The daemon's HTTP service without a daemon: `start` it, `close` it."""
    return HttpService(metrics, journal, lambda: view or DaemonView(), token=token)


class RestartableEmulator:
    """The emulator with its state in a file, so it can go away and come back on the same port."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.port = 0
        self._stack: contextlib.ExitStack | None = None
        self.emu: Emulator | None = None

    def start(self, faults: Faults | None = None, token: str = TOKEN) -> Emulator:
        fresh = self.port == 0
        self._stack = contextlib.ExitStack()
        self.emu = self._stack.enter_context(
            serve_emulator(
                token=token,
                seed={"contacts": [{"username": u} for u in CONTACTS]} if fresh else None,
                state_path=self.state_path,
                faults=faults,
                port=self.port,
            )
        )
        self.port = self.emu.port
        return self.emu

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = self.emu = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def by_name(self) -> dict[str, dict[str, Any]]:
        assert self.emu is not None
        return {g["name"]: g for g in self.emu.state.groups()}
