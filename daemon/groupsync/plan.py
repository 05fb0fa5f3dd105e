"""Pure: desired x actual x journal state -> Plan. No I/O, no clock, no network.

INTERFACE CONTRACT (issue 4 fills in compute_plan).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from groupsync.models import Group
from groupsync.spec import DesiredGroup


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
    members: frozenset[str] | None  # None: membership not managed
    archived: bool


@dataclass(frozen=True, slots=True)
class ManagedGroup:
    key: str
    group_id: str
    applied: AppliedState | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    on_removed: Literal["archive", "ignore", "delete"] = "archive"
    allow_delete: bool = False
    force: bool = False
    protected: frozenset[str] = frozenset()
    max_archive_fraction: float = 0.25
    max_member_removal_fraction: float = 0.25


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: Literal["name", "description", "avatar_url"]
    old: str | None
    new: str | None
    cause: Cause


@dataclass(frozen=True, slots=True)
class Change:
    """One group's change; applied as one API write (a create may need a second to archive).

    `set_archived`: True archives, False restores, None leaves it. `members` is the full desired
    list whenever membership changes (PUT contacts replaces the whole list).
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

    @property
    def phase(self) -> int:
        """0 creates/restores, 1 updates and additions, 2 removals, 3 archives/deletes."""
        if self.action in (Action.ARCHIVE, Action.DELETE, Action.FORGET) or self.set_archived:
            return 3
        if self.action in (Action.CREATE, Action.RESTORE) or self.set_archived is False:
            return 0
        return 2 if self.members_remove else 1

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class GroupError:
    key: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]  # ordered by (phase, key)
    errors: tuple[GroupError, ...] = ()
    refusals: tuple[str, ...] = ()  # safety limits exceeded (empty when forced or within limits)
    managed_count: int = 0
    checksum: str = field(default="")

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.errors

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def compute_plan(
    desired: Mapping[str, DesiredGroup],
    actual: Iterable[Group],
    managed: Mapping[str, ManagedGroup],
    policy: Policy = Policy(),
    known_usernames: frozenset[str] | None = None,
) -> Plan:
    """known_usernames: None when contacts were not read; then only additions can't be checked."""
    raise NotImplementedError
