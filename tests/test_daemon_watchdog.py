"""The systemd watchdog is pinged while runs finish, and withheld while one does not.

In-process: the daemon's real serve() with a $NOTIFY_SOCKET bound here, and a run held up by
the emulator's latency (every request takes longer than the daemon's stall limit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from groupsync.config import load_settings
from groupsync.daemon import Daemon
from groupsync.emulator import Emulator
from groupsync.liveness import Liveness
from groupsync.loader import Loaded
from groupsync.sdnotify import Notifier
from groupsync.secret import Secret
from groupsync.spec import load_spec
from groupsync.writer import JournalSeat

pytestmark = pytest.mark.anyio

LATENCY_S = 1.2  # per request: a run (its list calls, in parallel) takes about as long
STALL_AFTER_S = 0.5
PING_EVERY_S = 0.05  # WATCHDOG_USEC=100000: pinged every half of it


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory(prefix="gs-") as folder:  # sun_path: 108 bytes at most
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setblocking(False)
            yield sock, path


async def read_notifications(sock: socket.socket, into: list[tuple[float, dict[str, str]]]) -> None:
    """What systemd would read, stamped with when it came."""
    loop = asyncio.get_running_loop()
    while True:
        data = (await loop.sock_recv(sock, 4096)).decode()
        into.append((time.monotonic(), dict(line.split("=", 1) for line in data.split("\n"))))


async def test_the_watchdog_is_withheld_while_a_run_does_not_finish(
    tmp_path: Path,
    emulator: Emulator,
    notify_socket: tuple[socket.socket, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock, path = notify_socket
    (tmp_path / "spec.yaml").write_text("groups: {}\n")
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        f"api:\n  base_url: {emulator.base_url}\n  timeout_s: 30\n"
        "spec:\n  path: spec.yaml\nschedule:\n  every: 1s\n  jitter: 0s\n"
        "journal:\n  path: journal.db\n"
    )
    settings = load_settings(config)
    emulator.faults.update(latency_s=LATENCY_S)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(PING_EVERY_S * 2e6))})
    seat = JournalSeat.take(settings.journal.path)
    loaded = Loaded(settings, load_spec(settings.spec.path), Secret("test-token"))
    daemon = Daemon(config, loaded, seat, notifier=notifier, stall_after_s=STALL_AFTER_S)
    caplog.set_level(logging.INFO)
    notes: list[tuple[float, dict[str, str]]] = []
    reader = asyncio.get_running_loop().create_task(read_notifications(sock, notes))
    serving = asyncio.get_running_loop().create_task(daemon.serve())
    try:
        # While the first run is held up: unhealthy, saying why.
        stalled_health = None
        deadline = time.monotonic() + 10
        while stalled_health is None and time.monotonic() < deadline:
            ok, why = daemon.metrics.health()
            if "runs are not finishing" in why:
                stalled_health = (ok, why)
            await asyncio.sleep(0.02)
        assert stalled_health is not None and not stalled_health[0]
        stalled_at = time.monotonic()
        # Then the run finishes, the pings come back, and the next run goes the same way.
        deadline = time.monotonic() + 10
        while not any("outcome=noop" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the first run never finished"
            await asyncio.sleep(0.02)
        finished_at = time.monotonic()
        while not any(t > finished_at and m.get("WATCHDOG") == "1" for t, m in notes):
            assert time.monotonic() < deadline, "the pings did not resume"
            await asyncio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(serving, timeout=15) == 0
    finally:
        serving.cancel()
        reader.cancel()
        seat.release()

    pings = [t for t, m in notes if m.get("WATCHDOG") == "1"]
    assert any(t < stalled_at for t in pings)  # pinged while the run was young
    withheld = [t for t in pings if stalled_at <= t <= finished_at - 0.1]
    assert withheld == []  # none while it was stalled (about 2 s of missed pings)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(
        level == logging.ERROR and "the watchdog is no longer pinged" in m for level, m in messages
    )
    assert any("the watchdog is pinged again" in m for _, m in messages)
    assert any(
        "runs are not finishing" in m.get("STATUS", "") for _, m in notes
    )  # systemctl status says why


def test_a_long_run_that_keeps_settling_changes_is_not_stalled() -> None:
    now = [0.0]
    liveness = Liveness(10, clock=lambda: now[0])
    assert liveness.stalled() is None
    liveness.started()
    for _ in range(100):  # 100 changes, one every 5 s: 500 s in all
        now[0] += 5
        liveness.progressed()
        assert liveness.stalled() is None
    now[0] += 11
    why = liveness.stalled()
    assert why is not None and "runs are not finishing" in why and "511s" in why
    liveness.finished()
    assert liveness.stalled() is None and liveness.in_flight_s() == 0
