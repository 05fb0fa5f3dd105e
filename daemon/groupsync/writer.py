"""The daemon's claim to be the one writer of its journal, kept true while the journal folder
changes under it.

A journal folder deleted and recreated under a running daemon leaves it holding a deleted file
and a lock nobody else can see, so a second `groupsync run` starts on the new file. The seat
checks before every run that the journal and lock are still the files it holds; when they are
not, it stops writing and tries to take the new file's lock. If another process got there
first, it never writes again: only a restart (which then fails on the lock) resolves it.
"""

from __future__ import annotations

import enum
import logging
from contextlib import ExitStack
from pathlib import Path

from groupsync.errors import GroupsyncError
from groupsync.journal import Journal, JournalLocked, JournalReplaced

log = logging.getLogger("groupsync.daemon")


class SeatState(enum.Enum):
    HOLDING = "holding"  # the journal at the path and its lock are ours: runs may write
    LOST = "lost"  # they were replaced; the new file's lock is free or not there yet
    LOCKED_OUT = "locked out"  # another process holds the new journal: never write again


class JournalSeat:
    """One journal, open and locked by this process, and what to do when it is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = SeatState.LOST
        self._held = ExitStack()
        self._journal: Journal | None = None
        self._last_retry_error = ""

    @classmethod
    def take(cls, path: Path) -> JournalSeat:
        """Open and lock the journal at startup; JournalLocked if another writer holds it."""
        seat = cls(path)
        seat._hold()
        return seat

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise JournalReplaced(f"journal {self.path}: this daemon holds no journal")
        return self._journal

    @property
    def holding(self) -> bool:
        return self.state is SeatState.HOLDING

    def problem(self) -> str | None:
        """Why this daemon cannot write, for /healthz; None while it holds its journal."""
        if self.state is SeatState.LOST:
            return (
                f"journal {self.path} was deleted or replaced under this daemon: it writes "
                "nothing until it holds the new file's lock"
            )
        if self.state is SeatState.LOCKED_OUT:
            return (
                f"journal {self.path} was replaced and another process holds the new one: "
                "this daemon never writes again; restart it"
            )
        return None

    def ready(self) -> bool:
        """Whether a run may start now: checks the files, and on a change tries to take the new
        journal (once it is locked by another process, never again)."""
        if self.state is SeatState.HOLDING:
            try:
                self.journal.ensure_still_held()
                return True
            except JournalReplaced as e:
                log.critical("%s. This daemon stops writing to it.", e)
                self.release()
        if self.state is SeatState.LOST:
            self._retake()
        return self.state is SeatState.HOLDING

    def release(self) -> None:
        self._journal = None
        self._held.close()
        if self.state is SeatState.HOLDING:
            self.state = SeatState.LOST

    def _hold(self) -> None:
        with ExitStack() as stack:
            journal = stack.enter_context(Journal.open(self.path))
            stack.enter_context(journal.writer_lock())
            self._held = stack.pop_all()
        self._journal = journal
        self.state = SeatState.HOLDING

    def _retake(self) -> None:
        try:
            self._hold()
        except JournalLocked as e:
            self.state = SeatState.LOCKED_OUT
            log.critical(
                "%s: it is the writer of the new journal, so this daemon stays a non-writer "
                "until it is restarted (it reports unhealthy and starts no run)",
                e,
            )
            return
        except (GroupsyncError, OSError) as e:
            # The folder may not be back yet: try again before the next run, saying so once.
            if str(e) != self._last_retry_error:
                log.error("cannot take the new journal at %s yet: %s", self.path, e)
                self._last_retry_error = str(e)
            return
        log.warning(
            "took the lock of the new journal at %s: this daemon writes there from now on "
            "(the history of the replaced journal is not in it)",
            self.path,
        )
