"""Serving the emulator with uvicorn: a background thread for tests, the foreground for users."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from groupsync.asgiserve import GRACE_S, BackgroundServer, Server, bind
from groupsync.emulator.app import EmulatorApp
from groupsync.emulator.counters import RequestCounters
from groupsync.emulator.faults import Faults
from groupsync.emulator.state import EmulatorState
from groupsync.emulator.webhooks import WebhookSender, WebhookTarget
from groupsync.errors import GroupsyncError
from groupsync.secret import Secret

DEMO_TOKEN = "demo-token"
"""The bearer token `groupsync emulator` accepts when no --token is given (not a secret)."""


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
    def webhooks(self) -> WebhookSender | None:
        return self.app.webhooks

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
    webhook: WebhookTarget | None = None,
) -> EmulatorApp:
    """The ASGI app with its state loaded (seed applies only to an empty state file); with a
    `webhook`, every change to a group after the seed is sent there as a signed event."""
    state = EmulatorState(state_path)
    if seed is not None and not state.groups() and not state.contacts():
        state.load_seed(seed)
    app = EmulatorApp(
        state,
        faults or Faults(),
        RequestCounters(),
        token=_secret(token),
        admin_token=_secret(admin_token) if admin_token is not None else None,
    )
    if webhook is not None:
        app.webhooks = WebhookSender(webhook.url, webhook.secret, app.faults)
        state.listeners.append(app.webhooks.event)
    return app


def _close(app: EmulatorApp) -> None:
    if app.webhooks is not None:
        app.webhooks.close()
    app.state.close()


def _server(app: EmulatorApp, grace_s: float = GRACE_S) -> Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return Server(config, grace_s)


@contextmanager
def serve_emulator(
    *,
    token: str | Secret = "test-token",
    seed: Path | str | Mapping[str, Any] | None = None,
    state_path: Path | None = None,
    faults: Faults | None = None,
    port: int = 0,
    admin_token: str | Secret | None = None,
    webhook: WebhookTarget | None = None,
    grace_s: float = GRACE_S,
) -> Iterator[Emulator]:
    """Serve on 127.0.0.1 in a background thread until the block ends; then let requests in
    flight finish for up to `grace_s` before cancelling them."""
    app = build_app(
        token=token,
        admin_token=admin_token,
        seed=seed,
        state_path=state_path,
        faults=faults,
        webhook=webhook,
    )
    background = BackgroundServer(_server(app, grace_s), bind("127.0.0.1", port), name="emulator")
    try:
        yield Emulator(app, "127.0.0.1", background.port)
    finally:
        background.close()
        _close(app)


def run_foreground(
    app: EmulatorApp, *, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    """Serve `app` (see build_app) until SIGINT/SIGTERM (uvicorn handles both); on_ready gets
    the base URL first."""
    try:
        try:
            sock = bind(host, port)
        except OSError as e:
            raise GroupsyncError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        try:
            on_ready(f"http://{host}:{sock.getsockname()[1]}/v1")
            _server(app).run(sockets=[sock])
        finally:
            sock.close()
    finally:
        _close(app)


def _secret(value: str | Secret) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)
