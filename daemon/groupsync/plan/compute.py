"""compute_plan: identity, then member checks, then the diff, then the safety limits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from groupsync.gcpause import paused_gc
from groupsync.models import Group
from groupsync.plan import diff, identity, safety
from groupsync.plan.model import GroupError, ManagedGroup, Plan, Policy, RosterCounts
from groupsync.plan.usernames import MemberCheck
from groupsync.spec import DesiredGroup

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
        errors = {key: list(messages) for key, messages in matched.errors.items()}
        check = MemberCheck(known_usernames)
        for key, d in desired.items():
            if d.members is not None:
                for message in check.errors(d.members):
                    errors.setdefault(key, []).append(message)
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
        return Plan(
            changes=tuple(sorted(changes, key=lambda c: (c.phase, c.key))),
            errors=tuple(
                GroupError(key, message)
                for key in sorted(errors)
                for message in sorted(errors[key])
            ),
            refusals=safety.refusals(changes, by_id, managed, policy)
            + safety.roster_refusals(rosters or {}, last_rosters or {}, policy),
            managed_count=len(managed),
        )
