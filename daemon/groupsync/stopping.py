"""Ending a run early without lying about it: by a signal, a deadline, or a person at a prompt.

A run asked to stop starts no new change; a graceful stop lets the changes in flight finish
(within a grace period), a stop at once abandons them. `apply_plan` checks the stop before each
change and settles whatever it did not finish (`skipped`, `unknown`), so no journal row is left
`pending` and the summary still adds up. The CLI and the daemon share it: the first SIGINT or
SIGTERM stops gracefully, the second at once.
"""

from __future__ import annotations

import asyncio
import signal
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
    """One run's stop request. Made anywhere; used on the loop the run runs on.

    `requested` is set by any stop: no new change starts. `at_once` is set by a stop at once (or
    when a graceful stop's grace runs out): the changes in flight are abandoned.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.at_once = asyncio.Event()
        self.reasons: list[str] = []
        self.signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def attach(self) -> None:
        """Bind to the running loop, so signal handlers can reach it (call as the run starts)."""
        self._loop = asyncio.get_running_loop()

    def request(self, reason: str, *, grace_s: float) -> None:
        """Start nothing new; abandon what is still in flight after `grace_s` seconds."""
        if self.requested.is_set():
            return
        self.reasons.append(reason)
        self.requested.set()
        self._grace = asyncio.get_running_loop().call_later(
            grace_s, self._grace_over, f"the changes in flight were still going after {grace_s:g}s"
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

    def _grace_over(self, reason: str) -> None:
        self.now(reason)

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
            self.now(f"{name} again: the changes in flight were abandoned")
            message = f"{name} again: stopping at once"
        if notify is not None:
            notify(message)

    def signalled_threadsafe(
        self, name: str, *, grace_s: float, notify: Callable[[str], None] | None = None
    ) -> bool:
        """From a signal handler: hand the signal to the run's loop; False if no run is going."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        loop.call_soon_threadsafe(lambda: self.signalled(name, grace_s=grace_s, notify=notify))
        return True

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
    """While the block runs, SIGINT and SIGTERM stop the run instead of killing the process.

    Plain handlers, not `loop.add_signal_handler`: they must be in place before the loop starts
    (asyncio's runner then leaves SIGINT alone) and `interruptible` must be able to swap them
    out for a blocking prompt. Outside a run (no loop attached yet) a signal is a plain Ctrl-C.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not stop.signalled_threadsafe(name, grace_s=grace_s, notify=notify):
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class PromptSignal:
    """Which stop signal interrupted a prompt, if any."""

    name: str | None = None


@contextmanager
def interruptible() -> Iterator[PromptSignal]:
    """Around a blocking prompt: SIGINT or SIGTERM raise KeyboardInterrupt in it at once.

    A prompt blocks the event loop, so a loop-side handler would only run after the answer;
    the person who pressed Ctrl-C at `[y/N]` wants out now.
    """
    seen = PromptSignal()

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.name = signal.Signals(signum).name
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield seen
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
