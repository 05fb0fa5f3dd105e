"""Canonical JSON: one spelling per value, so that equal data hashes equal on every machine.

Everything groupsync hashes or compares as text goes through it: the plan checksum, the spec
digest, saved-plan fingerprints and the values the journal stores. Keys sorted, no whitespace,
UTF-8 text as is (no \\u escapes).
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
