"""Handing the memory a run or a reload freed back to the system (glibc's `malloc_trim`).

CPython gives blocks over 512 bytes (dict tables, long lists, file texts, HTTP bodies) to the C
library's malloc. glibc keeps what is freed inside its heaps for reuse and gives back only a
heap's top, so the daemon stays as big as its biggest moment: a reload frees the old spec
beneath blocks the new one took (loaded in a thread, in a heap of that thread's), and a run
frees its listing and plan the same way. With 100,000 groups, after a reload's run, 75 MiB of
the daemon's 308 MiB were glibc's free memory; `malloc_trim(0)` gave them back (233 MiB).
Another C library (musl, macOS) has no such call, and nothing is done there.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]  # this process's libc
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> None:
    """Give the C library's free memory back to the system. It takes milliseconds: call it
    between runs, not inside one."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
