"""uvicorn on a socket bound beforehand, in the foreground or in a thread with its own loop.

Shared by the emulator and the daemon's HTTP service. In a thread, uvicorn installs no signal
handlers (it does so only in the main thread), so the daemon's own SIGTERM/SIGHUP handling stays
in charge; the thread's event loop is its own, so neither loop can hold the other up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from types import FrameType

import uvicorn

STARTUP_TIMEOUT_S = 10.0
GRACE_S = 2.0
"""How long a stopping server lets requests in flight finish before cancelling them, unless
told otherwise (a test that ends with requests held by injected latency has no use for them)."""


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so port 0 gives a known port before uvicorn starts."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn notices should_exit by polling every 0.1 s; servers start and stop per test and
    per daemon, so wake the main loop at once instead, and say at once when it serves
    (`ready`)."""

    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, config: uvicorn.Config, grace_s: float = GRACE_S) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self.ready = threading.Event()

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.ready.set()  # started: the main loop runs only after a successful startup
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
        deadline = time.monotonic() + self.grace_s
        while self.server_state.connections or self.server_state.tasks:
            if self.force_exit or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        await self.lifespan.shutdown()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Ctrl-C or SIGTERM stops a foreground server normally (exit 0): unlike uvicorn's
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


class BackgroundServer:
    """`server` serving `sock` from a thread of its own until `close()`; the socket is ours."""

    def __init__(self, server: Server, sock: socket.socket, *, name: str) -> None:
        self.server = server
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=name
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.ready.wait(0.05):  # returns as soon as it serves
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{name}: the HTTP server did not start")

    def close(self) -> None:
        self.server.stop()
        self._thread.join(self.server.grace_s + 1)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(self.server.grace_s + 1)
        self.sock.close()
