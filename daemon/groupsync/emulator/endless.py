"""The "endless pages" fault: list pages that always say has_more, each with ids never seen.

Page n of a list holds items n*limit .. n*limit+limit-1; the cursor is the last id of a page, so
the next page follows from it alone. Every object has the contract's fields and types, so only
the endlessness is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from groupsync.emulator.state import ApiFailure

_CREATED_AT = 1_700_000_000
_PREFIX = {"groups": "endlessg", "contacts": "endlessc"}


def page_json(kind: str, limit: int, after: str | None, *, archived: bool = False) -> str:
    """One page of `kind` ("groups" or "contacts") after the cursor `after`, as the API's body."""
    prefix = _PREFIX[kind]
    first = _index(after, prefix) + 1 if after is not None else 0
    make = _group if kind == "groups" else _contact
    data = [make(f"{prefix}{n:08d}", n, archived) for n in range(first, first + limit)]
    return json.dumps({"has_more": True, "data": data})


def _index(cursor: str, prefix: str) -> int:
    digits = cursor.removeprefix(prefix)
    if not (cursor.startswith(prefix) and digits.isdigit()):
        raise ApiFailure(400, f"unknown cursor id: {cursor}")
    return int(digits)


def _group(id: str, n: int, archived: bool) -> dict[str, Any]:
    return {
        "id": id,
        "name": f"Endless {n}",
        "description": None,
        "avatar_url": None,
        "conversation_id": f"endlessv{n:08d}",
        "contacts": [],
        "created_at": _CREATED_AT,
        "archived_at": _CREATED_AT if archived else None,
    }


def _contact(id: str, n: int, archived: bool) -> dict[str, Any]:
    return {
        "id": id,
        "username": f"endless.{n}",
        "phone_number": None,
        "avatar_url": None,
        "display_name": None,
        "conversation_id": f"endlessw{n:08d}",
        "last_active_at": None,
        "created_at": _CREATED_AT,
    }
