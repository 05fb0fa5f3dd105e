"""Read a roster file whole, and only a file that held still while it was read.

An export job rewrites its files in place. A file read while it is being written is half a
roster, and half a roster plans the removal of half the campus. So the size and mtime are
taken before and after the read; if they moved, the read is tried once more, and a file that
moves both times is an error for this run (the next run tries again).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from groupsync.roster.issues import RosterError, row_issue


def _read_bytes(path: Path) -> bytes:
    """The read itself; a seam the tests use to change a file half way through a read."""
    return path.read_bytes()


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def read_still(path: Path, shown: str) -> bytes:
    """The bytes of `path`, read while its size and mtime stayed the same (two tries)."""
    try:
        for _ in range(2):
            before = _stamp(path)
            data = _read_bytes(path)
            if _stamp(path) == before and len(data) == before[0]:
                return data
    except FileNotFoundError:
        raise RosterError([row_issue(shown, None, "does not exist")]) from None
    except IsADirectoryError:
        raise RosterError([row_issue(shown, None, "is a folder, not a file")]) from None
    except OSError as e:
        raise RosterError([row_issue(shown, None, f"cannot be read: {e.strerror}")]) from None
    message = "changed while it was read, twice: an export still being written is not read"
    raise RosterError([row_issue(shown, None, message)])


@dataclass
class Digest:
    """SHA-256 over every file a roster read, in the order read: one value per roster per run."""

    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def add(self, name: str, data: bytes) -> None:
        self._hash.update(f"{name}\0{len(data)}\0".encode())
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
