"""Pure: desired x actual x journal state -> Plan. No I/O, no clock, no network.

The plan is what a reviewer approves (by checksum) and what the daemon applies, so it must be a
function of its inputs only: the same inputs give the same plan, byte for byte.

Checksum: SHA-256 (hex) of the canonical JSON (`canonical_json`: sorted keys, no whitespace,
UTF-8) of `{"changes": [...], "errors": [...]}` as `Plan.to_dict` writes them. Refusals and
`managed_count` are left out on purpose: `--force` empties the refusals, and a plan reviewed
without `--force` must keep its checksum when it is then applied with `--force --checksum X`.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from groupsync.canonical import canonical_json
from groupsync.gcpause import paused_gc
from groupsync.models import UNSET, Group
from groupsync.spec import MAX_MEMBERS, DesiredGroup
from groupsync.strictmodel import did_you_mean

MIN_MANAGED_FOR_FRACTIONS = 10
"""Below this many managed groups a fraction means little (1 of 3 is 33%): the limit is half."""

FIELDS: tuple[Literal["name", "description", "avatar_url"], ...] = (
    "name",
    "description",
    "avatar_url",
)

_SUGGESTION_BUDGET = 20
"""Did-you-mean lookups scan every contact; cap them so a wholly wrong spec still plans fast."""


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
    min_member_removals: int = 10  # removing this many memberships is never refused


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
class Plan:
    changes: tuple[Change, ...]  # ordered by (phase, key)
    errors: tuple[GroupError, ...] = ()
    refusals: tuple[str, ...] = ()  # safety limits exceeded (empty when forced or within limits)
    managed_count: int = 0  # keys the journal maps to a group id when the plan was made
    checksum: str = field(default="")

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
        }


def plan_checksum(changes: Iterable[Change], errors: Iterable[GroupError]) -> str:
    body = {"changes": [c.to_dict() for c in changes], "errors": [e.to_dict() for e in errors]}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def plan_json(plan: Plan) -> str:
    return canonical_json(plan.to_dict())


def usernames_to_verify(
    desired: Mapping[str, DesiredGroup], actual: Iterable[Group]
) -> frozenset[str]:
    """Desired usernames no group shows as a member yet.

    A username already in some group exists; only the rest need the contacts list, so a no-op
    reconcile never reads contacts (design.md, cost model).
    """
    wanted: set[str] = set()
    for d in desired.values():
        if d.members:
            wanted |= d.members
    for g in actual:
        if not wanted:
            break
        wanted -= g.members
    return frozenset(wanted)


def _cause(spec_changed: bool) -> Cause:
    return Cause.SPEC if spec_changed else Cause.DRIFT


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _limit_refusal(
    head: str, n: int, total: int, limit: float, floor: bool, at_least: int = 0
) -> str | None:
    """`head (30% > 25%)` when n of total exceeds the limit and `at_least`, else None."""
    if n <= at_least or n <= total * limit:
        return None
    why = f"{_percent(n / total)} > {_percent(limit)}"
    if floor:
        why += f", the limit below {MIN_MANAGED_FOR_FRACTIONS} managed groups"
    return f"{head} ({why})"


@dataclass(slots=True)
class _Target:
    """Where a desired key lands: an existing group (adopted or already managed) or a new one."""

    group: Group | None
    adopt: bool = False
    recreate: bool = False
    note: str = ""


class _Planner:
    """One compute_plan call: indexes built once, so every lookup is O(1)."""

    def __init__(
        self,
        desired: Mapping[str, DesiredGroup],
        actual: Iterable[Group],
        managed: Mapping[str, ManagedGroup],
        policy: Policy,
        known_usernames: frozenset[str] | None,
    ) -> None:
        self.desired = desired
        self.by_id = {g.id: g for g in actual}
        self.managed = managed
        self.policy = policy
        self.known = known_usernames
        self.owner_of = {mg.group_id: key for key, mg in managed.items()}
        self.errors: dict[str, list[str]] = {}
        self.changes: list[Change] = []
        self.moved_to: dict[str, str] = {}  # removed key -> desired key that took its group
        self._by_name: dict[str, list[Group]] | None = None
        self._suggestions_left = _SUGGESTION_BUDGET

    def error(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    # --- identity -------------------------------------------------------------------------

    def unmanaged_by_name(self) -> dict[str, list[Group]]:
        """Adoption candidates: groups no key manages or pins. Built only if some key needs it."""
        if self._by_name is None:
            pinned = {d.id for d in self.desired.values() if d.id}
            index: dict[str, list[Group]] = {}
            for g in self.by_id.values():
                if g.id not in self.owner_of and g.id not in pinned:
                    index.setdefault(g.name, []).append(g)
            self._by_name = index
        return self._by_name

    def resolve(self) -> dict[str, _Target]:
        pins: dict[str, list[str]] = {}
        for key, d in self.desired.items():
            mg = self.managed.get(key)
            if d.id and (mg is None or mg.group_id != d.id):
                pins.setdefault(d.id, []).append(key)
        targets: dict[str, _Target] = {}
        name_claims: dict[str, list[str]] = {}
        for key, d in self.desired.items():
            mg = self.managed.get(key)
            if mg is not None and (d.id is None or d.id == mg.group_id):
                g = self.by_id.get(mg.group_id)
                if g is not None:
                    targets[key] = _Target(g)
                elif d.id:
                    self.error(
                        key,
                        f"pinned group {d.id} no longer exists (deleted out of band); "
                        "remove its `id:` to create it again",
                    )
                else:
                    # Adopt by name before recreating: a create that crashed or timed out after
                    # the old group was deleted may have made the group already.
                    self.resolve_name(key, d, name_claims, targets, vanished=True)
            elif d.id:
                self.resolve_pin(key, d.id, mg, pins, targets)
            else:
                self.resolve_name(key, d, name_claims, targets, vanished=False)
        for gid, keys in name_claims.items():
            if len(keys) > 1:
                for key in keys:
                    del targets[key]
                    others = ", ".join(k for k in sorted(keys) if k != key)
                    self.error(
                        key,
                        f"group {gid} matches this key and {others} by name; "
                        "pin it with `id:` under one key",
                    )
        return targets

    def resolve_name(
        self,
        key: str,
        d: DesiredGroup,
        name_claims: dict[str, list[str]],
        targets: dict[str, _Target],
        *,
        vanished: bool,
    ) -> None:
        """Adopt the one unmanaged group with exactly this name; none: create; several: error."""
        gone = "deleted out of band"
        found = self.unmanaged_by_name().get(d.name, ())
        if len(found) == 1:
            name_claims.setdefault(found[0].id, []).append(key)
            note = f"{gone}; adopted the group by name" if vanished else "adopted by name"
            targets[key] = _Target(found[0], adopt=True, note=note)
        elif found:
            ids = ", ".join(sorted(g.id for g in found))
            self.error(
                key,
                f"{len(found)} groups are named {d.name!r} ({ids}); "
                "pin the one to adopt with `id:`",
            )
        else:
            targets[key] = _Target(None, recreate=vanished, note=gone if vanished else "")

    def resolve_pin(
        self,
        key: str,
        pin: str,
        mg: ManagedGroup | None,
        pins: Mapping[str, list[str]],
        targets: dict[str, _Target],
    ) -> None:
        g = self.by_id.get(pin)
        owner = self.owner_of.get(pin)
        if g is None:
            self.error(key, f"no group has the pinned id {pin}")
        elif len(pins[pin]) > 1:
            self.error(
                key, f"group {pin} is pinned by several keys: {', '.join(sorted(pins[pin]))}"
            )
        elif owner is not None and owner in self.desired:
            self.error(key, f"group {pin} is already managed by key {owner!r}")
        elif mg is not None and mg.group_id in pins:
            # Handing a group between two live keys in one apply would race in the journal
            # (one group, one key) and plan differently next time: make it two steps.
            others = ", ".join(sorted(pins[mg.group_id]))
            self.error(
                key,
                f"group {mg.group_id}, managed by this key, is pinned by key {others}: "
                f"drop that `id:` until this key has moved to {pin}",
            )
        else:
            if owner is not None:
                note = f"moved from key {owner!r}"
                self.moved_to[owner] = key
            elif mg is not None:
                note = f"pinned by `id:` (was group {mg.group_id}, now left alone)"
            else:
                note = "pinned by `id:`"
            targets[key] = _Target(g, adopt=True, note=note)

    # --- validation -----------------------------------------------------------------------

    def check_members(self, key: str, members: frozenset[str]) -> None:
        if len(members) > MAX_MEMBERS:
            self.error(key, f"{len(members)} members is over the limit of {MAX_MEMBERS}")
        if self.known is None:
            return
        unknown = sorted(members - self.known)
        if not unknown:
            return
        shown = [self.describe_unknown(u) for u in unknown[:10]]
        if len(unknown) > 10:
            shown.append(f"and {len(unknown) - 10} more")
        noun = "member" if len(unknown) == 1 else "members"
        self.error(key, f"unknown {noun} {', '.join(shown)}")

    def describe_unknown(self, username: str) -> str:
        assert self.known is not None
        if self._suggestions_left <= 0:
            return repr(username)
        self._suggestions_left -= 1
        return f"{username!r}{did_you_mean(username, self.known)}"

    # --- diff -----------------------------------------------------------------------------

    def create(self, key: str, d: DesiredGroup, recreate: bool, note: str) -> Change:
        cause = Cause.DRIFT if recreate else Cause.SPEC
        fields = tuple(
            FieldChange(f, None, v, cause)
            for f in FIELDS
            if (v := getattr(d, f)) is not UNSET and v is not None
        )
        members = None if d.members is None else tuple(sorted(d.members))
        return Change(
            key=key,
            action=Action.CREATE,
            cause=cause,
            name=d.name,
            fields=fields,
            members_add=members or (),
            members_cause=cause if members else None,
            members=members,
            set_archived=True if d.archived else None,
            archived_cause=cause if d.archived else None,
            note=note,
        )

    def update(self, key: str, d: DesiredGroup, g: Group, target: _Target) -> Change | None:
        mg = self.managed.get(key)
        applied = None if target.adopt or mg is None else mg.applied
        fields = []
        for f in FIELDS:
            new = getattr(d, f)
            if new is UNSET:
                continue
            old = getattr(g, f)
            if new != old:
                spec_changed = applied is None or getattr(applied, f) != new
                fields.append(FieldChange(f, old, new, _cause(spec_changed)))
        add: tuple[str, ...] = ()
        remove: tuple[str, ...] = ()
        members = members_cause = None
        if d.members is not None and d.members != g.members:
            add = tuple(sorted(d.members - g.members))
            remove = tuple(sorted(g.members - d.members))
            members = tuple(sorted(d.members))
            members_cause = _cause(applied is None or applied.members != d.members)
        set_archived = archived_cause = None
        if d.archived != g.archived:
            set_archived = d.archived
            archived_cause = _cause(applied is None or applied.archived != d.archived)
        if not (target.adopt or fields or members is not None or set_archived is not None):
            return None
        causes = [f.cause for f in fields] + [members_cause, archived_cause]
        cause = Cause.SPEC if target.adopt or Cause.SPEC in causes else Cause.DRIFT
        if target.adopt:
            action = Action.ADOPT
        elif set_archived is None:
            action = Action.UPDATE
        else:
            action = Action.ARCHIVE if set_archived else Action.RESTORE
        return Change(
            key=key,
            action=action,
            cause=cause,
            name=d.name,
            group_id=g.id,
            fields=tuple(fields),
            members_add=add,
            members_remove=remove,
            members_cause=members_cause,
            members=members,
            set_archived=set_archived,
            archived_cause=archived_cause,
            note=target.note,
        )

    def plan_desired(self) -> None:
        targets = self.resolve()
        for key, d in self.desired.items():
            if d.members is not None:
                self.check_members(key, d.members)
            target = targets.get(key)
            if target is None or key in self.errors:
                continue
            if target.group is None:
                change: Change | None = self.create(key, d, target.recreate, target.note)
            else:
                change = self.update(key, d, target.group, target)
            if change is None:
                continue
            if change.set_archived and key in self.policy.protected:
                self.error(key, "protected: never archived (safety.protected)")
                continue
            self.changes.append(change)

    def plan_removed(self, planned_keys: set[str]) -> None:
        for key, mg in self.managed.items():
            if key in self.desired:
                continue
            g = self.by_id.get(mg.group_id)
            name = g.name if g is not None else (mg.applied.name if mg.applied else key)
            forget = Change(key, Action.FORGET, Cause.SPEC, name, mg.group_id)
            new_key = self.moved_to.get(key)
            if new_key is not None:
                # The key was renamed and its group pinned under the new key: hand it over.
                if new_key in planned_keys:
                    self.changes.append(_with_note(forget, f"moved to key {new_key!r}"))
                continue
            if g is None:
                self.changes.append(_with_note(forget, "removed from the spec; group already gone"))
            elif self.policy.on_removed == "ignore":
                note = "removed from the spec; on_removed=ignore leaves the group as it is"
                self.changes.append(_with_note(forget, note))
            elif self.policy.on_removed == "archive" and g.archived:
                continue
            elif key in self.policy.protected:
                self.error(
                    key,
                    f"protected: removed from the spec but never {self.policy.on_removed}d "
                    "(safety.protected)",
                )
            elif self.policy.on_removed == "delete" and not self.policy.allow_delete:
                self.error(
                    key,
                    "removed from the spec and on_removed is delete: "
                    "pass --allow-delete to delete it permanently",
                )
            else:
                action = Action.DELETE if self.policy.on_removed == "delete" else Action.ARCHIVE
                self.changes.append(
                    Change(
                        key,
                        action,
                        Cause.SPEC,
                        name,
                        g.id,
                        set_archived=True if action is Action.ARCHIVE else None,
                        archived_cause=Cause.SPEC if action is Action.ARCHIVE else None,
                        note="removed from the spec",
                    )
                )

    # --- safety ---------------------------------------------------------------------------

    def refusals(self) -> tuple[str, ...]:
        """Peribolos-style caps: a broken spec or a short API read must not wipe the account."""
        if self.policy.force:
            return ()
        base_ids = {mg.group_id for mg in self.managed.values() if mg.group_id in self.by_id}
        base_ids.update(c.group_id for c in self.changes if c.action is Action.ADOPT and c.group_id)
        total = len(base_ids)
        floor = total < MIN_MANAGED_FOR_FRACTIONS
        archived = sum(1 for c in self.changes if c.set_archived and c.group_id is not None)
        deleted = sum(1 for c in self.changes if c.action is Action.DELETE)
        removed = sum(len(c.members_remove) for c in self.changes)
        memberships = sum(len(self.by_id[gid].members) for gid in base_ids)
        verbs = " and ".join(
            f"{verb} {n}" for verb, n in (("archive", archived), ("delete", deleted)) if n
        )
        out = [
            _limit_refusal(
                f"would {verbs} of {total} managed groups",
                archived + deleted,
                total,
                0.5 if floor else self.policy.max_archive_fraction,
                floor,
            ),
            _limit_refusal(
                f"would remove {removed} of {memberships} managed memberships",
                removed,
                memberships,
                0.5 if floor else self.policy.max_member_removal_fraction,
                floor,
                # A fraction of a small account is a handful of people: setting up a first
                # group or two would be refused. A wipe is many memberships, whatever the size.
                at_least=self.policy.min_member_removals,
            ),
        ]
        # A list that ended early (a server bug the client cannot see) looks like many managed
        # groups deleted by hand: recreating them all would duplicate the account. Small
        # accounts are exempt, so one group deleted by hand is simply put back.
        if len(self.managed) >= MIN_MANAGED_FOR_FRACTIONS:
            recreated = sum(
                1 for c in self.changes if c.action is Action.CREATE and c.cause is Cause.DRIFT
            )
            out.append(
                _limit_refusal(
                    f"would recreate {recreated} of {len(self.managed)} managed groups "
                    "the API no longer lists",
                    recreated,
                    len(self.managed),
                    self.policy.max_archive_fraction,
                    False,
                )
            )
        return tuple(r for r in out if r)


def _with_note(change: Change, note: str) -> Change:
    return Change(change.key, change.action, change.cause, change.name, change.group_id, note=note)


def compute_plan(
    desired: Mapping[str, DesiredGroup],
    actual: Iterable[Group],
    managed: Mapping[str, ManagedGroup],
    policy: Policy = Policy(),
    known_usernames: frozenset[str] | None = None,
) -> Plan:
    """known_usernames: the account's contacts, or None when they were not read (every desired
    username already shows in some group: see usernames_to_verify) and nothing is checked.

    Linear in groups plus memberships: actual groups are indexed by id once (and by name only if
    some key must be adopted by name); sorting touches the changes, not the account.
    """
    with paused_gc():
        planner = _Planner(desired, actual, managed, policy, known_usernames)
        planner.plan_desired()
        planner.plan_removed({c.key for c in planner.changes})
        changes = sorted(planner.changes, key=lambda c: (c.phase, c.key))
        errors = tuple(
            GroupError(key, message)
            for key in sorted(planner.errors)
            for message in sorted(planner.errors[key])
        )
        return Plan(
            changes=tuple(changes),
            errors=errors,
            refusals=planner.refusals(),
            managed_count=len(managed),
        )
