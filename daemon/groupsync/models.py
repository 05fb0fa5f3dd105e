"""Values shared by every layer: what the API returns, and the "leave it alone" marker."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final


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

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Contact:
        return cls(id=data["id"], username=data["username"], display_name=data.get("display_name"))


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

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Group:
        return cls(
            id=data["id"],
            name=data["name"],
            description=data.get("description"),
            avatar_url=data.get("avatar_url"),
            members=frozenset(c["username"] for c in data.get("contacts") or ()),
            archived_at=data.get("archived_at"),
            created_at=data.get("created_at") or 0,
            conversation_id=data.get("conversation_id"),
        )
