"""Files groupsync writes are its user's alone (0600), whatever the umask.

The journal, plan files and the emulator's state name groups, members and errors; the usual
umask 0o022 would make them world-readable. umask belongs to the whole process and the daemon has
threads, so it is never changed around an open: each file is created with mode 0600 and then set
to exactly that (a umask only removes bits, and 0o277 would leave the owner unable to write).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE = 0o600

# SQLite's companions of a database file: the WAL, its index, the rollback journal.
_SIDE_FILES = ("-wal", "-shm", "-journal")


def create(path: Path) -> bool:
    """Create `path` empty and 0600 unless something is there already; True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE)
    finally:
        os.close(fd)
    return True


def write_text(path: Path, text: str) -> None:
    """Write `path` as a 0600 file; a regular file already there is emptied and made 0600 first.

    Anything else (`/dev/stdout`, a pipe) keeps its mode: it is not groupsync's to change.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE)
    with open(fd, "w", encoding="utf-8") as out:  # owns fd from here on
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, PRIVATE)
        out.write(text)


def prepare_sqlite(path: Path) -> None:
    """Make a database file 0600 before SQLite opens it, and its companions as private as it.

    SQLite gives the -wal and -shm it creates the database file's mode (not the umask's), so a
    0600 database keeps them 0600; ones left by an older run get that mode here.
    """
    create(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    for suffix in _SIDE_FILES:
        try:
            os.chmod(path.with_name(path.name + suffix), mode)
        except FileNotFoundError:
            continue
