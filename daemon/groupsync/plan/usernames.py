"""Spec member lists against the account's contacts: which to look up, and what is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from groupsync.desired import MAX_MEMBERS, DesiredGroup
from groupsync.models import Group, Members
from groupsync.strictmodel import did_you_mean

_SUGGESTION_BUDGET = 20
"""Did-you-mean lookups scan every contact; cap them so a wholly wrong spec still plans fast."""


def usernames_to_verify(
    desired: Mapping[str, DesiredGroup], actual: Iterable[Group]
) -> frozenset[str]:
    """Desired usernames no group shows as a member yet.

    A username already in some group exists; only the rest need the contacts list, so a no-op
    reconcile never reads contacts.
    """
    wanted: set[str] = set()
    for d in desired.values():
        if d.members:
            wanted.update(d.members)
    for g in actual:
        if not wanted:
            break
        wanted.difference_update(g.members)
    return frozenset(wanted)


class MemberCheck:
    """One plan's member-list errors; did-you-mean hints are shared out across the whole plan."""

    def __init__(self, known: frozenset[str] | None) -> None:
        self.known = known  # None: not read (every username shows in some group), not checked
        self._suggestions_left = _SUGGESTION_BUDGET

    def errors(self, members: Members) -> list[str]:
        out = []
        if len(members) > MAX_MEMBERS:
            out.append(f"{len(members)} members is over the limit of {MAX_MEMBERS}")
        if self.known is None:
            return out
        unknown = sorted(members - self.known)
        if not unknown:
            return out
        shown = [self.describe_unknown(u) for u in unknown[:10]]
        if len(unknown) > 10:
            shown.append(f"and {len(unknown) - 10} more")
        noun = "member" if len(unknown) == 1 else "members"
        out.append(f"unknown {noun} {', '.join(shown)}")
        return out

    def describe_unknown(self, username: str) -> str:
        assert self.known is not None
        if self._suggestions_left <= 0:
            return repr(username)
        self._suggestions_left -= 1
        return f"{username!r}{did_you_mean(username, self.known)}"
