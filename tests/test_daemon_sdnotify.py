"""sd_notify over a real AF_UNIX datagram socket, as systemd would receive it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from groupsync.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("first run: 3 applied")
    assert receive(sock) == {"READY": "1", "STATUS": "first run: 3 applied"}
    assert n.status("line one\nline two")
    assert receive(sock) == {"STATUS": "line one line two"}
    assert n.stopping()
    assert receive(sock) == {"STOPPING": "1"}
    assert n.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier({"NOTIFY_SOCKET": path}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = receive(sock)
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_abstract_socket_name() -> None:
    name = f"groupsync-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive(sock) == {"READY": "1"}


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval_s is None


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}, 60.0),
        ({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_and_only_when_set(
    env: dict[str, str], expected: float | None
) -> None:
    assert Notifier(env).watchdog_interval_s == expected


def test_a_manager_that_stops_reading_never_blocks_the_sender(
    listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The queue of an unread datagram socket is short (net.unix.max_dgram_qlen, often 10):
    a blocking send would then hang the daemon's event loop for good."""
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    started = time.monotonic()
    sent = [n.status(f"line {i}") for i in range(200)]
    assert time.monotonic() - started < 5
    assert sent[0] and not sent[-1]
    assert len([r for r in caplog.records if "sd_notify failed" in r.message]) == 1
    sock.setblocking(False)
    while True:  # the manager reads again: the next message gets through
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    sock.settimeout(5)
    assert n.status("back")
    assert receive(sock) == {"STATUS": "back"}
