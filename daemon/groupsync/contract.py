"""API answers read against the contract's types (ecampus-api.md), field by field, as they come.

A malformed answer must fail the run, never turn into a plan: `archived_at: "yesterday"` taken
for archived restores a group, a `name: null` renames one, an id that is not a string crashes
the planner. Only the fields groupsync reads are checked, so a vendor adding a field never stops
a sync. A value quoted in an error goes through `redact` first: a server that echoes the request
may put the token in any field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from groupsync.models import Contact, Group, Members

_SHOWN_CHARS = 60
_MISSING: Any = object()


class Malformed(ValueError):
    """An answer off the contract: the field's path in the answer (`data[17].archived_at`) and
    what is wrong with it, any value quoted already redacted."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem

    def within(self, outer: str) -> Malformed:
        """The same problem, located from the object that holds this one at `outer`."""
        return Malformed(f"{outer}.{self.field}" if self.field else outer, self.problem)


class _Kind(NamedTuple):
    # Exact types: JSON's true and false are bools, and a bool is an int to isinstance().
    types: frozenset[type]
    expected: str
    non_empty: bool = False


_NULL = type(None)
_ID = _Kind(frozenset({str}), "a non-empty string", non_empty=True)
_TEXT = _Kind(frozenset({str}), "a string")
_TEXT_OR_NULL = _Kind(frozenset({str, _NULL}), "a string or null")
_TIME = _Kind(frozenset({int}), "an integer Unix time")
_TIME_OR_NULL = _Kind(frozenset({int, _NULL}), "an integer Unix time or null")
_LIST = _Kind(frozenset({list}), "a list")
_FLAG = _Kind(frozenset({bool}), "true or false")

# (field, kind, required): an optional field may be absent, which reads as null.
_Fields = tuple[tuple[str, _Kind, bool], ...]
_GROUP: _Fields = (
    ("id", _ID, True),
    ("name", _TEXT, True),
    ("description", _TEXT_OR_NULL, False),
    ("avatar_url", _TEXT_OR_NULL, False),
    ("conversation_id", _TEXT_OR_NULL, False),
    ("contacts", _LIST, True),
    ("created_at", _TIME, True),
    ("archived_at", _TIME_OR_NULL, False),
)
_CONTACT: _Fields = (
    ("id", _ID, True),
    ("username", _TEXT, True),
    ("display_name", _TEXT_OR_NULL, False),
)
_PAGE: _Fields = (("data", _LIST, True), ("has_more", _FLAG, True))
_MESSAGE: _Fields = (
    ("id", _ID, True),
    ("conversation_id", _ID, True),
    ("message", _TEXT, True),
    ("created_at", _TIME, True),
)


class Contract:
    """Reads API objects into models, or raises `Malformed` naming the first bad field."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact

    def group(self, data: Any) -> Group:
        gid, name, description, avatar_url, conversation_id, contacts, created_at, archived_at = (
            self._read(data, _GROUP)
        )
        return Group(
            id=gid,
            name=name,
            description=description,
            avatar_url=avatar_url,
            members=self._members(contacts),
            archived_at=archived_at,
            created_at=created_at,
            conversation_id=conversation_id,
        )

    def contact(self, data: Any) -> Contact:
        cid, username, display_name = self._read(data, _CONTACT)
        return Contact(id=cid, username=username, display_name=display_name)

    def page(self, body: Any) -> tuple[list[Any], bool]:
        """A list page's envelope; the caller reads its items, each at its place."""
        data, has_more = self._read(body, _PAGE)
        return data, has_more

    def message(self, body: Any) -> dict[str, Any]:
        self._read(body, _MESSAGE)
        return body  # type: ignore[no-any-return]

    def shown(self, value: Any) -> str:
        """A value from an answer as an error may quote it: JSON, redacted, then cut."""
        text = self._redact(json.dumps(value, ensure_ascii=False, default=repr))
        return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"

    def _members(self, contacts: list[Any]) -> Members:
        """The usernames of a group's contacts, every contact checked as `contact` checks it.

        100,000 groups hold a million contacts, so the common case is one comprehension with
        the checks of `_CONTACT` written out, no call per contact. A list it does not pass whole
        is read again contact by contact, which names the first bad field.
        """
        usernames = [
            c["username"]
            for c in contacts
            if type(c) is dict
            and type(c.get("id")) is str
            and c["id"]
            and type(c.get("username")) is str
            and type(c.get("display_name")) in _TEXT_OR_NULL.types
        ]
        if len(usernames) < len(contacts):
            usernames = []
            for i, contact in enumerate(contacts):
                try:
                    usernames.append(self._read(contact, _CONTACT)[1])
                except Malformed as exc:
                    raise exc.within(f"contacts[{i}]") from None
        # Interned: a username is in many groups, and in the spec and journal too.
        return Members(map(sys.intern, usernames))

    def _read(self, data: Any, fields: _Fields) -> list[Any]:
        if type(data) is not dict:
            raise Malformed("", f"expected an object, got {self.shown(data)}")
        values = []
        for name, kind, required in fields:
            value = data.get(name, _MISSING)
            if type(value) in kind.types and (value or not kind.non_empty):
                values.append(value)
            elif value is _MISSING and not required:
                values.append(None)
            else:
                got = "nothing" if value is _MISSING else self.shown(value)
                raise Malformed(name, f"expected {kind.expected}, got {got}")
        return values
