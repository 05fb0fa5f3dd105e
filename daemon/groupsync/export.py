"""The account's groups as a spec, so an existing account comes under groupsync without changes.

Every exported group pins its `id:`, so the first plan adopts exactly those groups (names are not
unique on eCampus) and finds nothing else to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from groupsync.models import Group
from groupsync.spec import DesiredGroup, dump_spec

_NOT_KEY = re.compile(r"[^a-z0-9._-]+")
_MAX_KEY = 64


def slug(name: str) -> str:
    """A spec key from a group name: lower case, runs of other characters become one dash."""
    text = _NOT_KEY.sub("-", name.lower()).strip("-._")
    return text[:_MAX_KEY].rstrip("-._") or "group"


def unique_keys(groups: Iterable[Group]) -> dict[str, Group]:
    """Key each group by its slug; collisions get -2, -3... in creation order, so reruns agree."""
    keyed: dict[str, Group] = {}
    for group in sorted(groups, key=lambda g: (g.created_at, g.id)):
        base = slug(group.name)
        key, n = base, 1
        while key in keyed:
            n += 1
            suffix = f"-{n}"
            key = base[: _MAX_KEY - len(suffix)] + suffix
        keyed[key] = group
    return keyed


def export_spec(groups: Iterable[Group], *, include_archived: bool = False) -> str:
    wanted = (g for g in groups if include_archived or not g.archived)
    desired = {
        key: DesiredGroup(
            key=key,
            name=g.name,
            description=g.description,
            avatar_url=g.avatar_url,
            members=g.members,
            archived=g.archived,
            id=g.id,
        )
        for key, g in unique_keys(wanted).items()
    }
    header = "# Exported by `groupsync export`: every group is pinned by id for exact adoption.\n"
    return header + dump_spec(desired)
