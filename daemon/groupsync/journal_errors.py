"""A journal failure as one line: the file, what could not be done, and what to do next.

SQLite says what went wrong in its own words ("database disk image is malformed"); the person
reading the error needs the file and the next step, never a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from groupsync.errors import GroupsyncError


class JournalError(GroupsyncError):
    """The journal file cannot be used (damaged, read-only, full, foreign, or newer)."""


# By SQLite's primary result code; an extended code keeps its primary one in the low byte.
_ADVICE = {
    sqlite3.SQLITE_BUSY: "another program holds it locked (a sqlite3 shell or Datasette"
    " writing?): close that program, then run again",
    sqlite3.SQLITE_LOCKED: "another connection in this process holds it locked: run again",
    sqlite3.SQLITE_READONLY: "make the file and its folder writable by groupsync's user, or set"
    " journal.path to a writable place",
    sqlite3.SQLITE_IOERR: "the disk refused a read or write (full, over a quota or file size"
    " limit, or failing): free space or check the disk, then run again",
    sqlite3.SQLITE_CORRUPT: "the file is damaged: restore it from a backup, or salvage it with"
    " `sqlite3 {path} .recover | sqlite3 {path}.recovered` and set journal.path to the new"
    " file",
    sqlite3.SQLITE_FULL: "the disk is full: free space on its file system, then run again",
    sqlite3.SQLITE_CANTOPEN: "check that its folder exists and groupsync's user may read and"
    " write there",
    sqlite3.SQLITE_NOTADB: "it is not an SQLite database, or its header is damaged: check"
    " journal.path, or restore the file from a backup",
}


def journal_error(path: Path, doing: str, exc: sqlite3.Error) -> JournalError:
    """`journal PATH: DOING: SQLITE MESSAGE; ADVICE`, for any error sqlite3 raises."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    return JournalError(f"journal {path}: {doing}: {exc}; {advice(path, code)}")


def advice(path: Path, code: int) -> str:
    """What to do about SQLite result code `code` on the journal at `path`."""
    return _ADVICE.get(code, "check the file, or restore it from a backup").format(path=path)
