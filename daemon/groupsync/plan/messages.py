"""The messages a plan would post (`notify:`): which changes speak, and what they say.

Only what the spec caused speaks. An adoption starts management and changes nobody's group, so
it posts nothing; a member put back after a hand-made removal (drift) was already welcomed once.
Each group gets at most one message of each kind per run: thirty additions make one welcome.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from groupsync.desired import DesiredGroup
from groupsync.models import Group
from groupsync.notify import KINDS, Notify, render
from groupsync.plan.model import Action, Cause, Change, ManagedGroup, Message, Plan

_SILENT = (Action.ADOPT, Action.FORGET, Action.DELETE)


def with_messages(
    plan: Plan,
    desired: Mapping[str, DesiredGroup],
    actual: Iterable[Group],
    managed: Mapping[str, ManagedGroup],
    *,
    notify: Notify,
    commit: str | None,
) -> Plan:
    """`plan` with the messages it would post; its checksum is unchanged (they are not in it)."""
    if not plan.changes:
        return plan
    by_id = {g.id: g for g in actual}
    blocked = {e.key for e in plan.errors}
    messages = plan_messages(
        plan.changes, desired, by_id, managed, notify, blocked=blocked, commit=commit
    )
    return replace(plan, messages=messages)


def plan_messages(
    changes: Collection[Change],
    desired: Mapping[str, DesiredGroup],
    by_id: Mapping[str, Group],
    managed: Mapping[str, ManagedGroup],
    notify: Notify,
    *,
    blocked: Collection[str],
    commit: str | None,
) -> tuple[Message, ...]:
    """A message per (change, kind) the spec caused and a template exists for; `blocked` keys
    (in error: never applied) post nothing. Ordered like the changes, then by kind."""
    out = []
    for change in changes:
        if change.action in _SILENT or change.key in blocked:
            continue
        group = by_id.get(change.group_id) if change.group_id is not None else None
        for kind, members in _kinds(change, group, managed.get(change.key)):
            template = notify.template(change.key, kind)
            if template is None:
                continue
            if members is None:
                members = _members_of(change, desired.get(change.key), group)
            values = {
                "name": change.name,
                "key": change.key,
                "members": members,
                "count": len(members),
                "commit": commit or "",
                "reason": change.note or "archived: true in the spec",
                "old_name": _old_name(change),
            }
            text = render(template, values)
            conversation = group.conversation_id if group is not None else None
            out.append(Message(change.key, kind, text, len(members), change.group_id, conversation))
    return tuple(out)


def _kinds(
    change: Change, group: Group | None, mg: ManagedGroup | None
) -> list[tuple[str, Collection[str] | None]]:
    """The kinds `change` posts, each with its members (None: the group's)."""
    out: dict[str, Collection[str] | None] = {}
    archives = change.set_archived is True and change.archived_cause is Cause.SPEC
    if archives and change.action is not Action.CREATE:
        out["on_archive"] = None
    ends_archived = change.set_archived is True or (
        change.set_archived is None and group is not None and group.archived
    )
    if not ends_archived:
        if change.set_archived is False and change.archived_cause is Cause.SPEC:
            out["on_restore"] = None
        if change.action is not Action.CREATE and _old_name(change) is not None:
            out["on_rename"] = None
        welcomed = _welcomed(change, mg)
        if welcomed:
            out["welcome"] = welcomed
    return [(kind, out[kind]) for kind in KINDS if kind in out]


def _welcomed(change: Change, mg: ManagedGroup | None) -> tuple[str, ...]:
    """The members the spec adds: not a recreated group's, nor those groupsync had added
    before (back after a hand-made removal: cause drift)."""
    if change.members_cause is not Cause.SPEC:  # a recreate's members are drift too
        return ()
    before = mg.applied.members if mg is not None and mg.applied is not None else None
    if before is None:
        return change.members_add
    known = set(before)
    return tuple(u for u in change.members_add if u not in known)


def _old_name(change: Change) -> str | None:
    """The name before a rename the spec made, or None."""
    for f in change.fields:
        if f.field == "name" and f.cause is Cause.SPEC:
            return f.old
    return None


def _members_of(change: Change, d: DesiredGroup | None, group: Group | None) -> Collection[str]:
    if change.members is not None:
        return change.members
    if d is not None and d.members is not None:
        return d.members
    return group.members if group is not None else ()
