"""Small helpers shared by several test modules."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    """Run git with a throwaway identity; its stdout, stripped. Fails the test on error."""
    r = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return r.stdout.strip()


def token_pieces(data: str | bytes, token: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of `token` found in `data`: any one is a leak."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return sorted({token[i : i + size] for i in range(len(token) - size + 1)} & _grams(text, size))


def _grams(text: str, size: int) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}
