"""Which existing group each desired key is: the journal's mapping, a pinned `id:`, or a name.

Identity comes first and alone, because every later step trusts it: a key matched to the wrong
group would rewrite someone else's group. So any doubt (two keys on one group, two groups with
one name, a pin on a group another key holds) is an error for the key, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from groupsync.desired import DesiredGroup
from groupsync.models import Group
from groupsync.plan.model import ManagedGroup

_GONE = "deleted out of band"


@dataclass(slots=True)
class Target:
    """Where a desired key lands: an existing group (adopted or already managed) or a new one."""

    group: Group | None
    adopt: bool = False
    recreate: bool = False
    note: str = ""


@dataclass(slots=True)
class Identities:
    targets: dict[str, Target] = field(default_factory=dict)  # keys without an error
    errors: dict[str, list[str]] = field(default_factory=dict)
    moved_to: dict[str, str] = field(default_factory=dict)  # removed key -> key taking its group

    def error(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)


def match(
    desired: Mapping[str, DesiredGroup],
    by_id: Mapping[str, Group],
    managed: Mapping[str, ManagedGroup],
) -> Identities:
    """Each desired key's target, or the reason it has none."""
    return _Matcher(desired, by_id, managed).match()


class _Matcher:
    """One match() call: indexes built once, so every lookup is O(1)."""

    def __init__(
        self,
        desired: Mapping[str, DesiredGroup],
        by_id: Mapping[str, Group],
        managed: Mapping[str, ManagedGroup],
    ) -> None:
        self.desired = desired
        self.by_id = by_id
        self.managed = managed
        self.owner_of = {mg.group_id: key for key, mg in managed.items()}
        self.out = Identities()
        self.pins: dict[str, list[str]] = {}  # group id -> keys pinning it anew
        self.name_claims: dict[str, list[str]] = {}  # group id -> keys adopting it by name
        self._by_name: dict[str, list[Group]] | None = None

    def match(self) -> Identities:
        for key, d in self.desired.items():
            mg = self.managed.get(key)
            if d.id and (mg is None or mg.group_id != d.id):
                self.pins.setdefault(d.id, []).append(key)
        for key, d in self.desired.items():
            mg = self.managed.get(key)
            if mg is not None and (d.id is None or d.id == mg.group_id):
                self.managed_key(key, d, mg)
            elif d.id:
                self.pinned_key(key, d.id, mg)
            else:
                self.by_name(key, d, vanished=False)
        self.drop_shared_name_claims()
        return self.out

    def managed_key(self, key: str, d: DesiredGroup, mg: ManagedGroup) -> None:
        """A key the journal maps: its group, unless the group is gone."""
        g = self.by_id.get(mg.group_id)
        if g is not None:
            self.out.targets[key] = Target(g)
        elif d.id:
            self.out.error(
                key,
                f"pinned group {d.id} no longer exists ({_GONE}); "
                "remove its `id:` to create it again",
            )
        else:
            # Adopt by name before recreating: a create that crashed or timed out after the
            # old group was deleted may have made the group already.
            self.by_name(key, d, vanished=True)

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

    def by_name(self, key: str, d: DesiredGroup, *, vanished: bool) -> None:
        """Adopt the one unmanaged group with exactly this name; none: create; several: error."""
        found = self.unmanaged_by_name().get(d.name, ())
        if len(found) == 1:
            self.name_claims.setdefault(found[0].id, []).append(key)
            note = f"{_GONE}; adopted the group by name" if vanished else "adopted by name"
            self.out.targets[key] = Target(found[0], adopt=True, note=note)
        elif found:
            ids = ", ".join(sorted(g.id for g in found))
            self.out.error(
                key,
                f"{len(found)} groups are named {d.name!r} ({ids}); "
                "pin the one to adopt with `id:`",
            )
        else:
            self.out.targets[key] = Target(None, recreate=vanished, note=_GONE if vanished else "")

    def pinned_key(self, key: str, pin: str, mg: ManagedGroup | None) -> None:
        """A key whose `id:` names a group it does not hold yet."""
        error = self.pin_error(pin, mg)
        if error is not None:
            self.out.error(key, error)
            return
        owner = self.owner_of.get(pin)
        if owner is not None:
            note = f"moved from key {owner!r}"
            self.out.moved_to[owner] = key
        elif mg is not None:
            note = f"pinned by `id:` (was group {mg.group_id}, now left alone)"
        else:
            note = "pinned by `id:`"
        self.out.targets[key] = Target(self.by_id[pin], adopt=True, note=note)

    def pin_error(self, pin: str, mg: ManagedGroup | None) -> str | None:
        owner = self.owner_of.get(pin)
        if pin not in self.by_id:
            return f"no group has the pinned id {pin}"
        if len(self.pins[pin]) > 1:
            return f"group {pin} is pinned by several keys: {', '.join(sorted(self.pins[pin]))}"
        if owner is not None and owner in self.desired:
            return f"group {pin} is already managed by key {owner!r}"
        if mg is not None and mg.group_id in self.pins:
            # Handing a group between two live keys in one apply would race in the journal
            # (one group, one key) and plan differently next time: make it two steps.
            others = ", ".join(sorted(self.pins[mg.group_id]))
            return (
                f"group {mg.group_id}, managed by this key, is pinned by key {others}: "
                f"drop that `id:` until this key has moved to {pin}"
            )
        return None

    def drop_shared_name_claims(self) -> None:
        """A group two keys would adopt by name belongs to neither until one pins it."""
        for gid, keys in self.name_claims.items():
            if len(keys) > 1:
                for key in keys:
                    del self.out.targets[key]
                    others = ", ".join(k for k in sorted(keys) if k != key)
                    self.out.error(
                        key,
                        f"group {gid} matches this key and {others} by name; "
                        "pin it with `id:` under one key",
                    )
