"""Values shared by every layer: what the API returns (read by `contract`), and the "leave it
alone" marker."""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Any, Final


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""A field the spec omits: groupsync leaves it alone (unlike None, which clears it)."""


class Members(tuple[str, ...]):
    """A member list: usernames, sorted, each once; immutable and compact.

    An account may hold 100,000 groups of 10 members, each group held three times in a plan
    (spec, API, journal): a frozenset of 10 takes 728 bytes, this 120. Comparing two is
    comparing tuples. It answers `==` with any set and the set operators a plan uses (`-`, `|`,
    `&`); `in` is a binary search.
    """

    __slots__ = ()

    def __new__(cls, users: Iterable[str] = ()) -> Members:
        if type(users) is cls:
            return users  # type: ignore[return-value]
        return super().__new__(cls, sorted(set(users)))

    @classmethod
    def _sorted(cls, users: Iterable[str]) -> Members:
        """From usernames already sorted and unique (a filtered Members)."""
        return super().__new__(cls, users)

    @classmethod
    def _unpickled(cls, users: tuple[str, ...]) -> Members:
        return super().__new__(cls, map(sys.intern, users))

    def __reduce__(self) -> tuple[Any, ...]:
        """Unpickled (a spec file read by a worker process) as read: sorted, and each username
        interned like every other Members holds it, since one username is in many groups."""
        return (Members._unpickled, (tuple(self),))

    def __contains__(self, user: object) -> bool:
        low, high = 0, len(self)
        while low < high:
            mid = (low + high) // 2
            item = tuple.__getitem__(self, mid)
            if item == user:
                return True
            if not isinstance(user, str):
                return False
            if item < user:
                low = mid + 1
            else:
                high = mid
        return False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return tuple.__eq__(self, other)
        if isinstance(other, Set):
            return len(self) == len(other) and all(user in other for user in self)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__

    # Ordering is set inclusion, as for frozenset (not the tuple's lexicographic order).
    def __le__(self, other: Iterable[str]) -> bool:  # type: ignore[override]
        within = _as_set(other)
        return all(user in within for user in self)

    def __ge__(self, other: Iterable[str]) -> bool:  # type: ignore[override]
        return all(user in self for user in other)

    def __lt__(self, other: Iterable[str]) -> bool:  # type: ignore[override]
        within = _as_set(other)
        return len(self) < len(within) and self <= within

    def __gt__(self, other: Iterable[str]) -> bool:  # type: ignore[override]
        outer = _as_set(other)
        return len(self) > len(outer) and self >= outer

    def __sub__(self, other: Iterable[str]) -> Members:  # type: ignore[override]
        drop = _as_set(other)
        return Members._sorted(user for user in self if user not in drop)

    def __and__(self, other: Iterable[str]) -> Members:
        keep = _as_set(other)
        return Members._sorted(user for user in self if user in keep)

    def __or__(self, other: Iterable[str]) -> Members:
        return Members((*self, *other))

    def __rsub__(self, other: Iterable[str]) -> frozenset[str]:
        return frozenset(other).difference(self)

    __ror__ = __or__
    __rand__ = __and__

    def __repr__(self) -> str:
        return f"Members({list(self)!r})"


def _as_set(users: Iterable[Any]) -> Set[Any]:
    return users if isinstance(users, Set) else frozenset(users)


NO_MEMBERS: Final = Members()


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
    members: Members = NO_MEMBERS  # any iterable of usernames is turned into Members
    archived_at: int | None = None
    created_at: int = 0
    conversation_id: str | None = None

    def __post_init__(self) -> None:
        if type(self.members) is not Members:
            object.__setattr__(self, "members", Members(self.members))

    @property
    def archived(self) -> bool:
        return self.archived_at is not None
