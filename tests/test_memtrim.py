"""The C library's free memory goes back to the system (glibc), as the daemon asks between runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from groupsync import memtrim

BLOCK = 64 * 1024  # over pymalloc's 512 bytes, under glibc's mmap threshold: from the heap
BLOCKS = 1024  # 64 MiB


def resident_mib() -> float:
    status = Path(f"/proc/{os.getpid()}/status").read_text(encoding="ascii")
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)[1]) / 1024  # type: ignore[index]


@pytest.mark.skipif(memtrim._MALLOC_TRIM is None, reason="no malloc_trim (not glibc)")
def test_memory_freed_below_a_live_block_goes_back_to_the_system() -> None:
    blocks = [bytes(BLOCK) for _ in range(BLOCKS)]  # bytes(n) writes its n zeros: resident
    above = bytes(BLOCK)  # what keeps glibc from giving the freed blocks back by itself
    del blocks
    freed = resident_mib()
    memtrim.release_free_memory()
    assert freed - resident_mib() > BLOCK * BLOCKS / 2**20 / 2
    del above
