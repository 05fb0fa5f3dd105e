"""compute_plan: identity, then member checks, then the diff, then the safety limits.

`compute_key_plan` is the same for a few keys read one by one (a webhook's repair): the same
steps and rules, the safety limits counted against the journal's totals.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from groupsync.desired import DesiredGroup
from groupsync.gcpause import paused_gc
from groupsync.models import Group
from groupsync.plan import diff, identity, safety
from groupsync.plan.model import Change, GroupError, ManagedGroup, Plan, Policy, RosterCounts
from groupsync.plan.usernames import MemberCheck

_DEFAULT_POLICY = Policy()  # frozen, so one shared default is safe


def compute_plan(
    desired: Mapping[str, DesiredGroup],
    actual: Iterable[Group],
    managed: Mapping[str, ManagedGroup],
    policy: Policy = _DEFAULT_POLICY,
    known_usernames: frozenset[str] | None = None,
    *,
    rosters: Mapping[str, RosterCounts] | None = None,
    last_rosters: Mapping[str, RosterCounts] | None = None,
) -> Plan:
    """known_usernames: the account's contacts, or None when they were not read (every desired
    username already shows in some group: see usernames_to_verify) and nothing is checked.
    rosters: what each roster yields now; last_rosters: at the last applied run.

    Linear in groups plus memberships: actual groups are indexed by id once (and by name only if
    some key must be adopted by name); sorting touches the changes, not the account.
    """
    with paused_gc():
        by_id = {g.id: g for g in actual}
        matched = identity.match(desired, by_id, managed)
        errors = _member_errors(desired, matched, known_usernames)
        wanted = diff.desired_changes(
            desired, matched.targets, managed, blocked=set(errors), protected=policy.protected
        )
        removed = diff.removed_changes(
            desired,
            by_id,
            managed,
            moved_to=matched.moved_to,
            planned={c.key for c in wanted.changes},
            policy=policy,
        )
        changes = wanted.changes + removed.changes
        for part in (wanted, removed):
            for key, messages in part.errors.items():
                errors.setdefault(key, []).extend(messages)
        totals = safety.Totals.of_account(changes, by_id, managed)
        refusals = safety.refusals(changes, totals, len(managed), policy)
        refusals += safety.roster_refusals(rosters or {}, last_rosters or {}, policy)
        return _plan(changes, errors, refusals, len(managed))


def compute_key_plan(
    desired: Mapping[str, DesiredGroup],
    keys: Collection[str],
    fetched: Iterable[Group],
    managed: Mapping[str, ManagedGroup],
    *,
    policy: Policy = _DEFAULT_POLICY,
    known_usernames: frozenset[str] | None = None,
    rosters: Mapping[str, RosterCounts] | None = None,
    last_rosters: Mapping[str, RosterCounts] | None = None,
) -> Plan:
    """The plan for `keys` alone: each a desired key the journal maps to a group that `fetched`
    holds as read now, pinned to no other group (see `narrow_keys`). The safety limits count
    against every group the journal manages, as a full plan's would."""
    with paused_gc():
        wanted_desired = {k: desired[k] for k in keys}
        wanted_managed = {k: managed[k] for k in keys}
        matched = identity.match(wanted_desired, {g.id: g for g in fetched}, wanted_managed)
        errors = _member_errors(wanted_desired, matched, known_usernames)
        wanted = diff.desired_changes(
            wanted_desired,
            matched.targets,
            wanted_managed,
            blocked=set(errors),
            protected=policy.protected,
        )
        for key, messages in wanted.errors.items():
            errors.setdefault(key, []).extend(messages)
        refusals = safety.refusals(
            wanted.changes, safety.Totals.of_journal(managed), len(managed), policy
        )
        refusals += safety.roster_refusals(rosters or {}, last_rosters or {}, policy)
        return _plan(wanted.changes, errors, refusals, len(managed))


def narrow_keys(
    desired: Mapping[str, DesiredGroup],
    keys: Iterable[str],
    fetched: Mapping[str, Group],
    managed: Mapping[str, ManagedGroup],
) -> tuple[frozenset[str], frozenset[str]]:
    """(the keys `compute_key_plan` can plan, the rest): a key the spec no longer has, whose
    group is gone (by `fetched`, by id), or that a pin moves needs the account's lists, so a
    full plan."""
    pinned = {d.id for d in desired.values() if d.id}
    ok, rest = set(), set()
    for key in keys:
        mg, d = managed.get(key), desired.get(key)
        plain = (
            mg is not None
            and d is not None
            and mg.group_id in fetched
            and (d.id is None or d.id == mg.group_id)
            and (mg.group_id not in pinned or d.id == mg.group_id)
        )
        (ok if plain else rest).add(key)
    return frozenset(ok), frozenset(rest)


def _member_errors(
    desired: Mapping[str, DesiredGroup],
    matched: identity.Identities,
    known_usernames: frozenset[str] | None,
) -> dict[str, list[str]]:
    errors = {key: list(messages) for key, messages in matched.errors.items()}
    check = MemberCheck(known_usernames)
    for key, d in desired.items():
        if d.members is not None:
            for message in check.errors(d.members):
                errors.setdefault(key, []).append(message)
    return errors


def _plan(
    changes: list[Change],
    errors: Mapping[str, list[str]],
    refusals: tuple[str, ...],
    managed_count: int,
) -> Plan:
    return Plan(
        changes=tuple(sorted(changes, key=lambda c: (c.phase, c.key))),
        errors=tuple(
            GroupError(key, message) for key in sorted(errors) for message in sorted(errors[key])
        ),
        refusals=refusals,
        managed_count=managed_count,
    )
