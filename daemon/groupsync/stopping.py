"""Ending a run early without lying about it: by a signal, a deadline, or a person at a prompt.

A run asked to stop starts no new change; a graceful stop lets the changes in flight finish
(within a grace period), a stop at once abandons them. `apply_plan` checks the stop before each
change and settles whatever it did not finish (`skipped`, `unknown`), so no journal row is left
`pending` and the summary still adds up. reconcile stops a run this way at its deadline; the
CLI on SIGINT or SIGTERM (the first gracefully, the second at once); a daemon passes its own
RunStop to reconcile and asks it to stop on SIGTERM the same way.
"""

from __future__ import annotations

import asyncio
import functools
import select
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

from groupsync.errors import GroupsyncError
from groupsync.outcomes import ExitCode

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(GroupsyncError):
    """The run was stopped before it could apply anything (while reading, or at the prompt)."""

    exit_code = ExitCode.INTERRUPTED


class RunStop:
    """One run's stop request: made anywhere, used on the loop the run runs on.

    `requested` is set by any stop: no new change starts. `at_once` is set by a stop at once (or
    when a graceful stop's grace runs out): the changes in flight are abandoned.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.at_once = asyncio.Event()
        self.reasons: list[str] = []
        self.signals = 0
        self._grace: asyncio.TimerHandle | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def request(self, reason: str, *, grace_s: float) -> None:
        """Start nothing new; abandon what is still in flight after `grace_s` seconds."""
        if self.requested.is_set():
            return
        self.reasons.append(reason)
        self.requested.set()
        self._grace = asyncio.get_running_loop().call_later(
            grace_s, self.now, f"the {grace_s:g}s grace for the changes in flight ran out"
        )

    def now(self, reason: str) -> None:
        """Start nothing new and abandon the changes in flight."""
        if self.at_once.is_set():
            return
        self.reasons.append(reason)
        self.requested.set()
        self.at_once.set()
        if self._grace is not None:
            self._grace.cancel()

    def signalled(
        self, name: str, *, grace_s: float, notify: Callable[[str], None] | None = None
    ) -> None:
        """A stop signal arrived: the first stops gracefully, the second at once."""
        self.signals += 1
        if self.signals == 1:
            self.request(f"stopped by {name}", grace_s=grace_s)
            message = (
                f"{name}: starting no more changes; the ones in flight get {grace_s:g}s to"
                " finish (press Ctrl-C again to stop at once)"
            )
        else:
            self.now(f"{name} again")
            message = f"{name} again: stopping at once"
        if notify is not None:
            notify(message)

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work` unless a stop comes first; then cancel it and raise Interrupted.

        For the side-effect-free part of a run (reading, planning): any stop ends it at once.
        """
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self.requested.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            raise Interrupted(f"{self.reason} before anything was applied")
        return task.result()


@contextmanager
def stop_on_signals(
    stop: RunStop, *, grace_s: float, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Inside a running loop: while the block runs, SIGINT and SIGTERM stop the run (the first
    gracefully, the second at once) instead of killing the process."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(
            sig, functools.partial(stop.signalled, sig.name, grace_s=grace_s, notify=notify)
        )
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


class Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised inside a blocking prompt by `interruptible`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@contextmanager
def interruptible() -> Iterator[None]:
    """Around a blocking prompt: SIGINT or SIGTERM raise Signalled in it at once.

    A prompt blocks the event loop, so a loop-side handler would only run after the answer;
    the person who pressed Ctrl-C at `[y/N]` wants out now. The loop's wakeup fd is unset
    meanwhile, so the loop does not see the same signal again once the prompt is over.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Signalled(signal.Signals(signum).name)

    wakeup = signal.set_wakeup_fd(-1)
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(wakeup)


def read_line() -> str:
    """One line from stdin; EOFError at the end of input.

    It waits in short selects rather than one blocking read: Python runs signal handlers
    between bytecodes, so a signal landing just before a blocking read (the prompt is on the
    screen, Ctrl-C pressed at once) would only be handled after the answer.
    """
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        continue
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line
