"""Serving the emulator with uvicorn: a background thread for tests, the foreground for users."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from groupsync.emulator.app import EmulatorApp
from groupsync.emulator.counters import RequestCounters
from groupsync.emulator.faults import Faults
from groupsync.emulator.state import EmulatorState
from groupsync.errors import GroupsyncError
from groupsync.secret import Secret

DEMO_TOKEN = "demo-token"
"""The bearer token `groupsync emulator` accepts when no --token is given (not a secret)."""

STARTUP_TIMEOUT_S = 10.0
GRACE_S = 2.0
"""How long a stopping emulator lets requests in flight finish before cancelling them."""


class Emulator:
    """A running emulator: where it is, its state and faults, and what it has seen."""

    def __init__(self, app: EmulatorApp, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.admin_token = app.admin_token
        self.base_url = f"http://{host}:{port}/v1"
        self.admin_url = f"http://{host}:{port}/_admin"

    @property
    def state(self) -> EmulatorState:
        return self.app.state

    @property
    def faults(self) -> Faults:
        return self.app.faults

    @property
    def counters(self) -> Counter[tuple[str, str, int]]:
        return self.app.counters.counts

    @property
    def max_in_flight(self) -> int:
        return self.app.counters.max_in_flight

    @property
    def request_times(self) -> list[float]:
        return self.app.counters.request_times

    def max_per_second(self) -> int:
        return self.app.counters.max_per_second()

    def count(
        self, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        return self.app.counters.count(method, path, status)

    def reset_counters(self) -> None:
        self.app.counters.reset()


def build_app(
    *,
    token: str | Secret,
    admin_token: str | Secret | None = None,
    seed: Path | str | Mapping[str, Any] | None = None,
    state_path: Path | None = None,
    faults: Faults | None = None,
) -> EmulatorApp:
    """The ASGI app with its state loaded (seed applies only to an empty state file)."""
    state = EmulatorState(state_path)
    if seed is not None and not state.groups() and not state.contacts():
        state.load_seed(seed)
    return EmulatorApp(
        state,
        faults or Faults(),
        RequestCounters(),
        token=_secret(token),
        admin_token=_secret(admin_token) if admin_token is not None else None,
    )


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so port 0 gives a known port before uvicorn starts."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class _Server(uvicorn.Server):
    """uvicorn notices should_exit by polling every 0.1 s; tests start an emulator per test,
    so wake the main loop at once instead."""

    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter += 10  # on_tick refreshes the Date header when counter % 10 == 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, minus its fixed 0.1 s sleep: poll until connections are gone."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        deadline = time.monotonic() + GRACE_S
        while self.server_state.connections or self.server_state.tasks:
            if self.force_exit or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        await self.lifespan.shutdown()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Ctrl-C or SIGTERM stops a foreground emulator normally (exit 0): unlike uvicorn's
        handler, do not record the signal to re-raise it after shutdown. A second Ctrl-C
        forces the exit."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.stop()

    def stop(self) -> None:
        self.should_exit = True
        self.wake()

    def wake(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to wake
                self._loop.call_soon_threadsafe(self._wake.set)


def _server(app: EmulatorApp) -> _Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return _Server(config)


@contextmanager
def serve_emulator(
    *,
    token: str | Secret = "test-token",
    seed: Path | str | Mapping[str, Any] | None = None,
    state_path: Path | None = None,
    faults: Faults | None = None,
    port: int = 0,
    admin_token: str | Secret | None = None,
) -> Iterator[Emulator]:
    """Serve on 127.0.0.1 in a background thread until the block ends."""
    app = build_app(
        token=token, admin_token=admin_token, seed=seed, state_path=state_path, faults=faults
    )
    sock = bind("127.0.0.1", port)
    server = _server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="emulator"
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        yield Emulator(app, "127.0.0.1", sock.getsockname()[1])
    finally:
        server.stop()
        thread.join(GRACE_S + 1)
        if thread.is_alive():
            server.force_exit = True
            thread.join(GRACE_S + 1)
        sock.close()
        app.state.close()


def run_foreground(
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    token: str | Secret,
    admin_token: str | Secret | None = None,
    seed: Path | None = None,
    state_path: Path | None = None,
    faults: Faults | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both); on_ready gets the base URL first."""
    app = build_app(
        token=token, admin_token=admin_token, seed=seed, state_path=state_path, faults=faults
    )
    try:
        sock = bind(host, port)
    except OSError as e:
        raise GroupsyncError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    try:
        on_ready(f"http://{host}:{sock.getsockname()[1]}/v1")
        _server(app).run(sockets=[sock])
    finally:
        sock.close()
        app.state.close()


def _secret(value: str | Secret) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)
