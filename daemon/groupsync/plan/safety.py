"""Safety limits: a plan that would change too much of the account at once is refused.

Peribolos-style caps: a broken spec or a short API read must not wipe the account. A refused
plan is still shown in full; `--force` lifts the refusals (and the checksum ignores them, so a
plan reviewed without `--force` can be applied with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from groupsync.models import Group
from groupsync.plan.model import Action, Cause, Change, ManagedGroup, Policy, RosterCounts

MIN_MANAGED_FOR_FRACTIONS = 10
"""Below this many managed groups a fraction means little (1 of 3 is 33%): the limit is half."""


@dataclass(frozen=True, slots=True)
class Totals:
    """What the limits' fractions are of: the managed groups a plan may touch, their members."""

    groups: int
    memberships: int

    @classmethod
    def of_account(
        cls,
        changes: Sequence[Change],
        by_id: Mapping[str, Group],
        managed: Mapping[str, ManagedGroup],
    ) -> Totals:
        """As the account lists them: the managed groups the API still has, and those adopted."""
        ids = {mg.group_id for mg in managed.values() if mg.group_id in by_id}
        ids.update(c.group_id for c in changes if c.action is Action.ADOPT and c.group_id)
        return cls(len(ids), sum(len(by_id[gid].members) for gid in ids))

    @classmethod
    def of_journal(cls, managed: Mapping[str, ManagedGroup]) -> Totals:
        """As the journal last applied them: for a plan of a few keys, which read only those
        groups, so that repairing key by key never escapes the limits of a full run."""
        members = sum(len(mg.applied.members or ()) for mg in managed.values() if mg.applied)
        return cls(len(managed), members)


def refusals(
    changes: Sequence[Change], totals: Totals, managed_count: int, policy: Policy
) -> tuple[str, ...]:
    """Every limit the changes exceed, in words; empty when forced or within the limits."""
    if policy.force:
        return ()
    out = [
        _archives(changes, totals.groups, policy),
        _member_removals(changes, totals, policy),
        _recreates(changes, managed_count, policy),
    ]
    return tuple(r for r in out if r)


def roster_refusals(
    now: Mapping[str, RosterCounts], last: Mapping[str, RosterCounts], policy: Policy
) -> tuple[str, ...]:
    """A roster that shrank below `min_roster_fraction` of the last applied run's yield.

    An export that is empty, cut short or half-written looks like a campus that dropped out;
    the archive and removal limits alone would still let a quarter of it go per run. A roster
    new since that run has nothing to compare with.
    """
    if policy.force:
        return ()
    out = []
    for name in sorted(now):
        before = last.get(name)
        if before is None:
            continue
        for what, n, then in (
            ("groups", now[name].groups, before.groups),
            ("members", now[name].members, before.members),
        ):
            if then and n < then * policy.min_roster_fraction:
                out.append(
                    f"roster {name} yields {n} {what}, {_percent(n / then)} of the {then} at"
                    f" the last applied run (< {_percent(policy.min_roster_fraction)},"
                    " safety.min_roster_fraction): is the export empty, cut short or half"
                    " written?"
                )
    return tuple(out)


def _archives(changes: Sequence[Change], total: int, policy: Policy) -> str | None:
    archived = sum(1 for c in changes if c.set_archived and c.group_id is not None)
    deleted = sum(1 for c in changes if c.action is Action.DELETE)
    verbs = " and ".join(
        f"{verb} {n}" for verb, n in (("archive", archived), ("delete", deleted)) if n
    )
    small = total < MIN_MANAGED_FOR_FRACTIONS
    return _over_limit(
        f"would {verbs} of {total} managed groups",
        archived + deleted,
        total,
        0.5 if small else policy.max_archive_fraction,
        small=small,
    )


def _member_removals(changes: Sequence[Change], totals: Totals, policy: Policy) -> str | None:
    removed = sum(len(c.members_remove) for c in changes)
    small = totals.groups < MIN_MANAGED_FOR_FRACTIONS
    return _over_limit(
        f"would remove {removed} of {totals.memberships} managed memberships",
        removed,
        totals.memberships,
        0.5 if small else policy.max_member_removal_fraction,
        small=small,
        # A fraction of a small account is a handful of people: setting up a first group or
        # two would be refused. A wipe is many memberships, whatever the account's size.
        at_least=policy.min_member_removals,
    )


def _recreates(changes: Sequence[Change], managed: int, policy: Policy) -> str | None:
    """A list that ended early (a server bug the client cannot see) looks like many managed
    groups deleted by hand: recreating them all would duplicate the account. Small accounts
    are exempt, so one group deleted by hand is simply put back."""
    if managed < MIN_MANAGED_FOR_FRACTIONS:
        return None
    recreated = sum(1 for c in changes if c.action is Action.CREATE and c.cause is Cause.DRIFT)
    return _over_limit(
        f"would recreate {recreated} of {managed} managed groups the API no longer lists",
        recreated,
        managed,
        policy.max_archive_fraction,
    )


def _over_limit(
    head: str, n: int, total: int, limit: float, *, small: bool = False, at_least: int = 0
) -> str | None:
    """`head (30% > 25%)` when n of total is over the limit and over `at_least`, else None."""
    if n <= at_least or n <= total * limit:
        return None
    why = f"{_percent(n / total)} > {_percent(limit)}"
    if small:
        why += f", the limit below {MIN_MANAGED_FOR_FRACTIONS} managed groups"
    return f"{head} ({why})"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}".rstrip("0").rstrip(".") + "%"
