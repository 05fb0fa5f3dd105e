"""What the spec wants of one group, and the rules every group name and member list obeys.

Shared by the YAML loader (groupsync.spec) and the roster generator (groupsync.roster), so a
group written by hand and one generated from a registrar's export are held to the same limits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from groupsync.models import UNSET, Members, _Unset
from groupsync.yamlstrict import Location

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_MEMBERS = 1000
MAX_NAME = 100

# Characters a group name must not hold: controls (Unicode category Cc) and the line and
# paragraph separators break the one line a chat list shows; the bidirectional controls
# (Unicode's Bidi_Control set) reorder what members read, so that a name can pass for another.
_NOT_IN_NAMES = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SPOKEN = {"\t": "a tab", "\n": "a line break", "\r": "a carriage return"}


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    """One group as the spec wants it. UNSET (omitted) leaves a field alone; None clears it."""

    key: str
    name: str
    description: str | _Unset | None = UNSET
    avatar_url: str | _Unset | None = UNSET
    members: Members | None = None  # None: membership is not managed; any iterable is accepted
    archived: bool = False
    id: str | None = None  # pinned group id
    location: Location | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.members is not None and type(self.members) is not Members:
            object.__setattr__(self, "members", Members(self.members))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its constructor's arguments (see `Location.__reduce__`)."""
        values = (self.description, self.avatar_url, self.members, self.archived, self.id)
        return (DesiredGroup, (self.key, self.name, *values, self.location))


def name_error(name: str) -> str | None:
    """Why `name` cannot be a group name (blank, or holding a character from above), or None."""
    if not name.strip():
        return "name is only spaces"
    bad = _NOT_IN_NAMES.search(name)
    if bad is None:
        return None
    char = bad.group()
    known = unicodedata.name(char, "")
    what = _SPOKEN.get(char) or (f"the {known.lower()}" if known else "a control character")
    return (
        f"name has {what} (U+{ord(char):04X}) at character {bad.start() + 1}: "
        "a group name is one line of visible text"
    )
