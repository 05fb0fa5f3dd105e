"""One status line on a terminal while API calls wait on retries, so a slow command is not silent.

The line appears once a call's waiting passes `THRESHOLD_S` (a short blip shows nothing), is
rewritten in place on every new wait, and is erased when no call is waiting any more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from groupsync.api import Wait, wait_listener

THRESHOLD_S = 2.0
_ERASE = "\r\x1b[K"  # back to the line's start, clear to its end


def render(wait: Wait) -> str:
    return (
        f"waiting for the eCampus API: {wait.reason}, retry {wait.attempt} in {wait.delay_s:.1f} s…"
    )


class WaitLine:
    """A `WaitListener` that draws the latest wait of any call on `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._waits: dict[object, Wait] = {}
        self._shown = False

    def waiting(self, call: object, wait: Wait) -> None:
        self._waits[call] = wait
        if wait.waited_s + wait.delay_s > THRESHOLD_S:
            self._write(_ERASE + render(wait)[: self._columns() - 1])
            self._shown = True

    def done(self, call: object) -> None:
        self._waits.pop(call, None)
        if not self._waits:
            self.clear()

    def clear(self) -> None:
        if self._shown:
            self._write(_ERASE)
            self._shown = False

    def _columns(self) -> int:
        """The terminal's width, so the line never wraps (a wrapped line cannot be erased)."""
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns or 80  # a terminal that does not know its size says 0

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


@contextmanager
def on_terminal(stream: TextIO) -> Iterator[None]:
    """Show the API's retry waits on `stream` during the block, if it is a terminal."""
    if not stream.isatty():
        yield
        return
    line = WaitLine(stream)
    with wait_listener(line):
        try:
            yield
        finally:
            line.clear()
