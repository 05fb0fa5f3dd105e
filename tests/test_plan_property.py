"""Property: applying a plan converges, and planning again finds nothing left to do.

A small in-memory interpreter applies each Change the way apply.py does through the API (one
write per change, the journal updated after it); hypothesis searches random desired, actual and
journal states for a plan that does not converge, touches an unmanaged group, or flaps.
"""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groupsync.models import UNSET, Group
from groupsync.plan import Action, AppliedState, Change, ManagedGroup, Plan, Policy, compute_plan
from groupsync.spec import DesiredGroup

USERS = ("ada", "bob", "cliff", "dee")
NAMES = ("Alpha", "Beta", "Gamma")
KEYS = ("k0", "k1", "k2", "k3", "k4")
IDS = tuple(f"g{i}" for i in range(6))

members = st.frozensets(st.sampled_from(USERS))


@st.composite
def groups(draw) -> dict[str, Group]:
    ids = draw(st.lists(st.sampled_from(IDS), unique=True, max_size=len(IDS)))
    return {
        gid: Group(
            id=gid,
            name=draw(st.sampled_from(NAMES)),
            description=draw(st.sampled_from((None, "x", "y"))),
            avatar_url=draw(st.sampled_from((None, "https://a/1.png"))),
            members=draw(members),
            archived_at=draw(st.sampled_from((None, 1700000000))),
        )
        for gid in ids
    }


applied_states = st.none() | st.builds(
    AppliedState,
    name=st.sampled_from(NAMES),
    description=st.sampled_from((None, "x", "y")),
    avatar_url=st.sampled_from((None, "https://a/1.png")),
    members=st.none() | members,
    archived=st.booleans(),
)


@st.composite
def journals(draw) -> dict[str, ManagedGroup]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    ids = draw(st.permutations((*IDS, "gone1", "gone2", "gone3", "gone4", "gone5")))
    return {
        k: ManagedGroup(k, gid, draw(applied_states)) for k, gid in zip(keys, ids, strict=False)
    }


@st.composite
def specs(draw) -> dict[str, DesiredGroup]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    return {
        k: DesiredGroup(
            key=k,
            name=draw(st.sampled_from(NAMES)),
            description=draw(st.sampled_from((UNSET, None, "x", "y"))),
            avatar_url=draw(st.sampled_from((UNSET, None, "https://a/1.png"))),
            members=draw(st.none() | members),
            archived=draw(st.booleans()),
            id=draw(st.none() | st.none() | st.sampled_from((*IDS, "nope"))),
        )
        for k in keys
    }


policies = st.builds(
    Policy,
    on_removed=st.sampled_from(("archive", "ignore", "delete")),
    allow_delete=st.booleans(),
    force=st.booleans(),
    protected=st.frozensets(st.sampled_from(KEYS), max_size=2),
)


class World:
    """The account and the journal, changed the way apply.py changes them."""

    def __init__(self, account: dict[str, Group], journal: dict[str, ManagedGroup]) -> None:
        self.account = dict(account)
        self.journal = dict(journal)
        self._ids = itertools.count()

    def apply(self, plan: Plan, desired: dict[str, DesiredGroup]) -> None:
        assert [c.phase for c in plan.changes] == sorted(c.phase for c in plan.changes)
        for change in plan.changes:
            self.apply_one(change, desired.get(change.key))

    def apply_one(self, c: Change, d: DesiredGroup | None) -> None:
        if c.action is Action.FORGET:
            del self.journal[c.key]
            return
        if c.action is Action.DELETE:
            del self.account[c.group_id]
            del self.journal[c.key]
            return
        if c.action is Action.CREATE:
            assert c.group_id is None
            gid = f"new{next(self._ids)}"
            g = Group(id=gid, name=c.name)
        else:
            gid = c.group_id
            g = self.account[gid]
        values = {f.field: f.new for f in c.fields}
        if c.members is not None:
            values["members"] = frozenset(c.members)
        if c.set_archived is not None:
            values["archived_at"] = 1800000000 if c.set_archived else None
        g = dataclasses.replace(g, **values)
        self.account[gid] = g
        if d is None:  # a removed key archived: still managed, so it stays archived
            assert c.action is Action.ARCHIVE
            last = self.journal[c.key].applied
            wanted_members = last.members if last else None
        else:
            wanted_members = d.members
        owners = [k for k, m in self.journal.items() if m.group_id == gid and k != c.key]
        assert not owners, f"journal: {gid} is already managed under {owners}"
        self.journal[c.key] = ManagedGroup(
            c.key,
            gid,
            AppliedState(g.name, g.description, g.avatar_url, wanted_members, g.archived),
        )


def plan(desired, world: World, policy: Policy, known) -> Plan:
    return compute_plan(desired, list(world.account.values()), world.journal, policy, known)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    desired=specs(),
    account=groups(),
    journal=journals(),
    policy=policies,
    known=st.sampled_from((None, frozenset(USERS), frozenset(USERS[:3]))),
)
def test_applying_the_plan_converges_and_replanning_is_empty(
    desired, account, journal, policy, known
):
    world = World(account, journal)
    first = plan(desired, world, policy, known)
    adopted = {c.group_id for c in first.changes if c.action is Action.ADOPT}
    managed_before = {m.group_id for m in journal.values()}

    world.apply(first, desired)

    errored = {e.key for e in first.errors}
    for key, d in desired.items():
        if key in errored:
            continue
        g = world.account[world.journal[key].group_id]
        assert g.name == d.name
        assert d.description is UNSET or g.description == d.description
        assert d.avatar_url is UNSET or g.avatar_url == d.avatar_url
        assert d.members is None or g.members == d.members
        assert g.archived == d.archived
    for gid, g in account.items():
        if gid not in managed_before and gid not in adopted:
            assert world.account[gid] == g, "an unmanaged group was touched"
    for key in journal.keys() - desired.keys() - errored:
        m = world.journal.get(key)
        if m is None:
            continue  # forgotten, deleted, or handed over to a renamed key
        if any(d.id == m.group_id for k, d in desired.items() if k in errored):
            continue  # a move to a key with an error waits, the old key untouched
        assert policy.on_removed == "archive"
        assert world.account[m.group_id].archived

    again = plan(desired, world, policy, known)
    assert again.changes == (), again.changes
    assert {e.key for e in again.errors} == errored
