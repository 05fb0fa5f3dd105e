"""Values shared by every layer: what the API returns (read by `contract`), and the "leave it
alone" marker."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""A field the spec omits: groupsync leaves it alone (unlike None, which clears it)."""


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    username: str
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """A group as the API reports it; members are usernames (case-sensitive)."""

    id: str
    name: str
    description: str | None = None
    avatar_url: str | None = None
    members: frozenset[str] = frozenset()
    archived_at: int | None = None
    created_at: int = 0
    conversation_id: str | None = None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None
