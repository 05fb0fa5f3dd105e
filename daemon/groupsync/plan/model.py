"""The plan's values: what a change is, what a plan holds, and how its checksum is made.

Checksum: SHA-256 (hex) of the canonical JSON (`canonical_json`: sorted keys, no whitespace,
UTF-8) of `{"changes": [...], "errors": [...]}` as `Plan.to_dict` writes them. Refusals and
`managed_count` are left out on purpose: `--force` empties the refusals, and a plan reviewed
without `--force` must keep its checksum when it is then applied with `--force --checksum X`.
The messages are left out too (see `Plan.messages`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from groupsync.canonical import canonical_json
from groupsync.models import Members

FIELDS: tuple[Literal["name", "description", "avatar_url"], ...] = (
    "name",
    "description",
    "avatar_url",
)


class Action(enum.StrEnum):
    CREATE = "create"
    ADOPT = "adopt"
    UPDATE = "update"
    RESTORE = "restore"
    ARCHIVE = "archive"
    DELETE = "delete"
    FORGET = "forget"


class Cause(enum.StrEnum):
    SPEC = "spec"  # the spec changed since the last apply (or the key is new)
    DRIFT = "drift"  # the group was changed outside groupsync


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What groupsync last made a group look like; the journal keeps it to tell drift from spec."""

    name: str
    description: str | None
    avatar_url: str | None
    members: Members | None  # None: membership not managed; any iterable is accepted
    archived: bool

    def __post_init__(self) -> None:
        if self.members is not None and type(self.members) is not Members:
            object.__setattr__(self, "members", Members(self.members))


class ManagedGroup:
    """A key groupsync manages: the group it owns, and what groupsync last made it look like
    (`applied`; None where there is no record of it). Read-only, as the plan's other values.

    With `read`, `applied` is given as the journal keeps it and read when first asked for: a
    plan asks only about groups that differ from the spec, and reading all of an account's
    100,000 took most of a second of a no-op plan.
    """

    __slots__ = ("_applied", "_read", "group_id", "key")
    key: str
    group_id: str

    def __init__(
        self,
        key: str,
        group_id: str,
        applied: Any = None,
        *,
        read: Callable[[Any], AppliedState | None] | None = None,
    ) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "group_id", group_id)
        object.__setattr__(self, "_applied", applied)
        object.__setattr__(self, "_read", read)

    @property
    def applied(self) -> AppliedState | None:
        if self._read is not None:
            object.__setattr__(self, "_applied", self._read(self._applied))
            object.__setattr__(self, "_read", None)
        return self._applied  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ManagedGroup is read-only: cannot set {name}")

    def _values(self) -> tuple[str, str, AppliedState | None]:
        return self.key, self.group_id, self.applied

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ManagedGroup):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"ManagedGroup({self.key!r}, {self.group_id!r}, {self.applied!r})"


@dataclass(frozen=True, slots=True)
class Policy:
    on_removed: Literal["archive", "ignore", "delete"] = "archive"
    allow_delete: bool = False
    force: bool = False
    protected: frozenset[str] = frozenset()
    max_archive_fraction: float = 0.25
    max_member_removal_fraction: float = 0.25
    min_member_removals: int = 10  # removing this many memberships is never refused
    min_roster_fraction: float = 0.5  # of a roster's groups and members at the last applied run


@dataclass(frozen=True, slots=True)
class RosterCounts:
    """What one roster yields: the safety check compares it with the last applied run's."""

    groups: int
    members: int


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: Literal["name", "description", "avatar_url"]
    old: str | None
    new: str | None
    cause: Cause

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new, "cause": self.cause.value}


@dataclass(frozen=True, slots=True)
class Change:
    """One group's change; applied as one API write (a create may need a second to archive).

    `set_archived`: True archives, False restores, None leaves it. `members` is the full desired
    list whenever membership changes (PUT contacts replaces the whole list). A create carries
    every value to send as `fields` (old None) and `members`, so a saved plan is self-contained.
    """

    key: str
    action: Action
    cause: Cause
    name: str
    group_id: str | None = None  # None only for create
    fields: tuple[FieldChange, ...] = ()
    members_add: tuple[str, ...] = ()  # sorted
    members_remove: tuple[str, ...] = ()  # sorted
    members_cause: Cause | None = None
    members: tuple[str, ...] | None = None  # sorted full list to send, when membership changes
    set_archived: bool | None = None
    note: str = ""
    archived_cause: Cause | None = None  # set with set_archived

    @property
    def writes(self) -> bool:
        """False for journal-only changes (a forget, an adoption needing no edit): the account
        itself does not change, so `plan --detailed-exitcode` does not count them."""
        if self.action is Action.FORGET:
            return False
        edits = self.fields or self.members is not None or self.set_archived is not None
        return self.action is not Action.ADOPT or bool(edits)

    @property
    def phase(self) -> int:
        """-1 forgets, 0 creates/restores, 1 updates and additions, 2 removals, 3 archives/deletes.

        Forgets touch only the journal and go first, alone: a key renamed in the spec hands its
        group to the new key (forget the old mapping, then adopt), and the journal maps a group
        to one key at a time.
        """
        if self.action is Action.FORGET:
            return -1
        if self.action in (Action.ARCHIVE, Action.DELETE) or self.set_archived:
            return 3
        if self.action in (Action.CREATE, Action.RESTORE) or self.set_archived is False:
            return 0
        return 2 if self.members_remove else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action.value,
            "cause": self.cause.value,
            "name": self.name,
            "group_id": self.group_id,
            "phase": self.phase,
            "fields": [f.to_dict() for f in self.fields],
            "members_add": list(self.members_add),
            "members_remove": list(self.members_remove),
            "members_cause": None if self.members_cause is None else self.members_cause.value,
            "members": None if self.members is None else list(self.members),
            "set_archived": self.set_archived,
            "archived_cause": None if self.archived_cause is None else self.archived_cause.value,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class GroupError:
    key: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "message": self.message}


@dataclass(frozen=True, slots=True)
class Message:
    """A message the plan would post into a group's conversation (`notify:`).

    `conversation_id` is None for a group the run creates: known once it exists. `count`: the
    members it welcomes, or the group's members for the other kinds.
    """

    key: str
    kind: str  # a notify kind: welcome, on_archive, on_restore, on_rename
    text: str
    count: int
    group_id: str | None = None
    conversation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "text": self.text,
            "count": self.count,
            "group_id": self.group_id,
            "conversation_id": self.conversation_id,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]  # ordered by (phase, key)
    errors: tuple[GroupError, ...] = ()
    refusals: tuple[str, ...] = ()  # safety limits exceeded (empty when forced or within limits)
    managed_count: int = 0  # keys the journal maps to a group id when the plan was made
    checksum: str = field(default="")
    # What it would post: never a change (--detailed-exitcode) and not in the checksum, so a
    # reworded template does not make a reviewed plan stale.
    messages: tuple[Message, ...] = ()

    def __post_init__(self) -> None:
        # A plan built by hand (tests, tools) still gets the checksum apply --checksum compares.
        if not self.checksum:
            object.__setattr__(self, "checksum", plan_checksum(self.changes, self.errors))

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.errors

    @property
    def counts(self) -> dict[str, int]:
        """Changes per action (every action present, zeros included) plus `errors`."""
        counts = dict.fromkeys((a.value for a in Action), 0)
        for change in self.changes:
            counts[change.action.value] += 1
        counts["errors"] = len(self.errors)
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.changes],
            "errors": [e.to_dict() for e in self.errors],
            "refusals": list(self.refusals),
            "managed_count": self.managed_count,
            "checksum": self.checksum,
            "messages": [m.to_dict() for m in self.messages],
        }


def plan_checksum(changes: Iterable[Change], errors: Iterable[GroupError]) -> str:
    body = {"changes": [c.to_dict() for c in changes], "errors": [e.to_dict() for e in errors]}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
