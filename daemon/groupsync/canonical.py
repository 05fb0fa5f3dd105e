"""Canonical JSON: one spelling per value, so that equal data hashes equal on every machine.

Everything groupsync hashes or compares as text goes through it: the plan checksum, the spec
digest, saved-plan fingerprints and the values the journal stores. Keys sorted, no whitespace,
UTF-8 text as is (no \\u escapes).
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any, *, in_order: bool = False) -> str:
    """`in_order`: the caller built every dict with its keys already sorted, so they are not
    sorted again (the same text; the spec digest of 100,000 groups takes half the time)."""
    return json.dumps(value, sort_keys=not in_order, separators=(",", ":"), ensure_ascii=False)
