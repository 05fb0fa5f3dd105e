"""What must change: each matched key's group against the spec, and each removed key's group.

Every change carries its cause: the spec changed since the last apply, or someone edited the
group outside groupsync (drift). The journal's record of what groupsync last applied tells
the two apart; an adopted group has no record, so its changes are the spec's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from groupsync.desired import DesiredGroup
from groupsync.models import UNSET, Group
from groupsync.plan.identity import Target
from groupsync.plan.model import (
    FIELDS,
    Action,
    AppliedState,
    Cause,
    Change,
    FieldChange,
    ManagedGroup,
    Policy,
)


@dataclass(slots=True)
class Diff:
    changes: list[Change] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)  # key -> why it has no change

    def error(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)


def desired_changes(
    desired: Mapping[str, DesiredGroup],
    targets: Mapping[str, Target],
    managed: Mapping[str, ManagedGroup],
    *,
    blocked: Collection[str],
    protected: Collection[str],
) -> Diff:
    """A change per desired key that differs from its target; `blocked` keys (already in
    error) get none, and a protected key that would be archived gets an error instead."""
    out = Diff()
    for key, d in desired.items():
        target = targets.get(key)
        if target is None or key in blocked:
            continue
        if target.group is None:
            change: Change | None = create(key, d, target)
        else:
            change = update(key, d, target, None if target.adopt else managed.get(key))
        if change is None:
            continue
        if change.set_archived and key in protected:
            out.error(key, "protected: never archived (safety.protected)")
            continue
        out.changes.append(change)
    return out


def create(key: str, d: DesiredGroup, target: Target) -> Change:
    """A new group with every value the spec sets: a saved plan must hold all it will send."""
    cause = Cause.DRIFT if target.recreate else Cause.SPEC
    fields = tuple(
        FieldChange(f, None, v, cause)
        for f in FIELDS
        if (v := getattr(d, f)) is not UNSET and v is not None
    )
    members = None if d.members is None else tuple(d.members)
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
        note=target.note,
    )


def update(key: str, d: DesiredGroup, target: Target, mg: ManagedGroup | None) -> Change | None:
    """The edits that bring an existing group to the spec; None when it already matches (an
    adoption is a change even then: the journal starts managing the group).

    `mg` (None for an adoption: its record is not groupsync's) is asked what was last applied
    only for a value that differs: reading it is most of the cost of an unchanged group.
    """
    g = target.group
    assert g is not None
    fields = _field_changes(d, g, mg)
    add, remove, members, members_cause = _member_changes(d, g, mg)
    set_archived = archived_cause = None
    if d.archived != g.archived:
        set_archived = d.archived
        applied = _applied(mg)
        archived_cause = _cause(applied is None or applied.archived != d.archived)
    if not (target.adopt or fields or members is not None or set_archived is not None):
        return None
    causes = [f.cause for f in fields] + [members_cause, archived_cause]
    return Change(
        key=key,
        action=_update_action(target, set_archived),
        cause=Cause.SPEC if target.adopt or Cause.SPEC in causes else Cause.DRIFT,
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


def _update_action(target: Target, set_archived: bool | None) -> Action:
    if target.adopt:
        return Action.ADOPT
    if set_archived is None:
        return Action.UPDATE
    return Action.ARCHIVE if set_archived else Action.RESTORE


def _cause(spec_changed: bool) -> Cause:
    return Cause.SPEC if spec_changed else Cause.DRIFT


def _applied(mg: ManagedGroup | None) -> AppliedState | None:
    return None if mg is None else mg.applied


def _field_changes(d: DesiredGroup, g: Group, mg: ManagedGroup | None) -> list[FieldChange]:
    out = []
    for f in FIELDS:
        new = getattr(d, f)
        if new is UNSET:
            continue
        old = getattr(g, f)
        if new != old:
            applied = _applied(mg)
            spec_changed = applied is None or getattr(applied, f) != new
            out.append(FieldChange(f, old, new, _cause(spec_changed)))
    return out


def _member_changes(
    d: DesiredGroup, g: Group, mg: ManagedGroup | None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None, Cause | None]:
    """(added, removed, the full list to send, cause); nothing when membership is unmanaged
    or already right."""
    if d.members is None or d.members == g.members:
        return (), (), None, None
    applied = _applied(mg)
    return (
        tuple(d.members - g.members),  # Members are sorted
        tuple(g.members - d.members),
        tuple(d.members),
        _cause(applied is None or applied.members != d.members),
    )


def removed_changes(
    desired: Mapping[str, DesiredGroup],
    by_id: Mapping[str, Group],
    managed: Mapping[str, ManagedGroup],
    *,
    moved_to: Mapping[str, str],
    planned: Collection[str],
    policy: Policy,
) -> Diff:
    """What becomes of the group of each managed key the spec no longer has (`on_removed`).

    `moved_to` maps a removed key to the desired key that pinned its group; the old key is
    forgotten only if that key has a change planned (`planned`), which adopts the group.
    """
    out = Diff()
    for key, mg in managed.items():
        if key in desired:
            continue
        g = by_id.get(mg.group_id)
        name = g.name if g is not None else (mg.applied.name if mg.applied else key)
        forget = Change(key, Action.FORGET, Cause.SPEC, name, mg.group_id)
        new_key = moved_to.get(key)
        if new_key is not None:
            # The key was renamed and its group pinned under the new key: hand it over.
            if new_key in planned:
                out.changes.append(_with_note(forget, f"moved to key {new_key!r}"))
            continue
        outcome = _removed(forget, g, policy)
        if isinstance(outcome, Change):
            out.changes.append(outcome)
        elif outcome is not None:
            out.error(key, outcome)
    return out


def _removed(forget: Change, g: Group | None, policy: Policy) -> Change | str | None:
    """One removed key: its change, the error that stops it, or None (nothing to do)."""
    if g is None:
        return _with_note(forget, "removed from the spec; group already gone")
    if policy.on_removed == "ignore":
        return _with_note(
            forget, "removed from the spec; on_removed=ignore leaves the group as it is"
        )
    if policy.on_removed == "archive" and g.archived:
        return None
    if forget.key in policy.protected:
        return f"protected: removed from the spec but never {policy.on_removed}d (safety.protected)"
    if policy.on_removed == "delete" and not policy.allow_delete:
        return (
            "removed from the spec and on_removed is delete: "
            "pass --allow-delete to delete it permanently"
        )
    action = Action.DELETE if policy.on_removed == "delete" else Action.ARCHIVE
    return Change(
        forget.key,
        action,
        Cause.SPEC,
        forget.name,
        g.id,
        set_archived=True if action is Action.ARCHIVE else None,
        archived_cause=Cause.SPEC if action is Action.ARCHIVE else None,
        note="removed from the spec",
    )


def _with_note(change: Change, note: str) -> Change:
    return Change(change.key, change.action, change.cause, change.name, change.group_id, note=note)
