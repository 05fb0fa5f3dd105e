"""sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET.

The protocol is a few lines of text over an AF_UNIX datagram socket, so a dependency (and its C
extension) is not worth it. Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op, which
keeps the daemon runnable by hand and in tests.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Talks to the service manager named by $NOTIFY_SOCKET (read once, at creation)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a Linux abstract socket: the leading '@' stands for a NUL byte.
        self._address: str | bytes | None = (
            b"\0" + address[1:].encode() if address.startswith("@") else address or None
        )
        self.watchdog_interval_s = _watchdog_interval(env)
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send KEY=value lines; never raises and never blocks.

        A lost status line must not stop the daemon, and it is sent from the event loop: a
        manager that stops reading (its socket queue full) must not wedge the loop, so such a
        message is dropped, and said once until a send gets through again.
        """
        if self._address is None:
            return False
        message = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        try:
            with socket.socket(socket.AF_UNIX, flags) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as e:
            if not self._failing:
                log.warning("sd_notify failed (dropped until it works again): %s", e)
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(ready=1, **({"status": status} if status else {}))

    def reloading(self) -> bool:
        # systemd 252 has no Type=notify-reload; MONOTONIC_USEC lets newer managers match the
        # READY=1 that follows to this reload.
        return self.notify(
            reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(stopping=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(status=text)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)


def _one_line(value: str | int) -> str:
    # A newline inside a value would start a new (possibly meaningful) assignment.
    return str(value).replace("\n", " ")


def _watchdog_interval(env: os._Environ[str] | dict[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when no watchdog is set.

    WATCHDOG_PID, when present, must be ours: a child must not ping for its parent.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000 / 2
