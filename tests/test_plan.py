"""Table tests for compute_plan: one rule per test (identity, diff, cause, safety), as
ARCHITECTURE.md ("The plan") states them."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from groupsync.canonical import canonical_json
from groupsync.models import UNSET, Group
from groupsync.plan import (
    Action,
    AppliedState,
    Cause,
    Change,
    FieldChange,
    GroupError,
    ManagedGroup,
    Plan,
    Policy,
    compute_plan,
    usernames_to_verify,
)
from groupsync.spec import DesiredGroup


def plan_json(plan: Plan) -> str:
    """The whole plan as canonical JSON: equal plans give equal text."""
    return canonical_json(plan.to_dict())


def dg(key: str, name: str | None = None, **kw: object) -> DesiredGroup:
    if "members" in kw and kw["members"] is not None:
        kw["members"] = frozenset(kw["members"])  # type: ignore[arg-type]
    return DesiredGroup(key=key, name=name or key.upper(), **kw)  # type: ignore[arg-type]


def grp(gid: str, name: str, members: tuple[str, ...] = (), archived: bool = False, **kw) -> Group:
    return Group(
        id=gid,
        name=name,
        members=frozenset(members),
        archived_at=1700000000 if archived else None,
        **kw,
    )


def applied(
    name: str,
    description: str | None = None,
    avatar_url: str | None = None,
    members: tuple[str, ...] | None = None,
    archived: bool = False,
) -> AppliedState:
    return AppliedState(
        name=name,
        description=description,
        avatar_url=avatar_url,
        members=None if members is None else frozenset(members),
        archived=archived,
    )


DEFAULT = Policy()


def plan_of(desired, actual=(), managed=None, policy=DEFAULT, known=None) -> Plan:
    return compute_plan(
        {d.key: d for d in desired},
        list(actual),
        {m.key: m for m in managed or ()},
        policy,
        known,
    )


def only(plan: Plan) -> Change:
    assert len(plan.changes) == 1, plan.changes
    return plan.changes[0]


def messages(plan: Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in plan.errors:
        out.setdefault(e.key, []).append(e.message)
    return out


# --- create ---------------------------------------------------------------------------------


def test_new_key_without_a_matching_group_is_created_with_every_value_to_send():
    plan = plan_of(
        [dg("cs101", "CS 101", description="Fall", avatar_url=None, members=["b", "a"])],
        [grp("x1", "Something else")],
    )
    c = only(plan)
    assert (c.action, c.cause, c.group_id, c.phase) == (Action.CREATE, Cause.SPEC, None, 0)
    assert c.fields == (
        FieldChange("name", None, "CS 101", Cause.SPEC),
        FieldChange("description", None, "Fall", Cause.SPEC),
    )
    assert c.members == ("a", "b") and c.members_add == ("a", "b") and c.members_remove == ()
    assert c.set_archived is None
    assert plan.refusals == () and plan.errors == ()


def test_new_group_that_must_be_archived_is_created_then_archived():
    c = only(plan_of([dg("old", archived=True)]))
    assert c.action is Action.CREATE and c.set_archived is True and c.phase == 3


def test_new_group_with_unmanaged_members_is_created_empty_without_a_member_list():
    c = only(plan_of([dg("a")]))
    assert c.members is None and c.members_add == () and c.members_cause is None


# --- adoption ---------------------------------------------------------------------------------


def test_the_one_group_with_exactly_that_name_is_adopted_even_without_changes():
    c = only(plan_of([dg("chess", "Chess")], [grp("g1", "Chess"), grp("g2", "chess")]))
    assert (c.action, c.group_id, c.cause) == (Action.ADOPT, "g1", Cause.SPEC)
    assert c.fields == () and c.members is None and c.set_archived is None
    assert "name" in c.note


def test_adopting_an_archived_group_restores_it_and_updates_in_the_same_change():
    c = only(
        plan_of(
            [dg("chess", "Chess", description="New", members=["a"])],
            [grp("g1", "Chess", members=("b",), archived=True, description="Old")],
        )
    )
    assert c.action is Action.ADOPT and c.set_archived is False and c.phase == 0
    assert c.fields == (FieldChange("description", "Old", "New", Cause.SPEC),)
    assert (c.members_add, c.members_remove, c.members) == (("a",), ("b",), ("a",))


def test_adopt_then_archive_when_the_spec_wants_it_archived():
    c = only(plan_of([dg("chess", "Chess", archived=True)], [grp("g1", "Chess")]))
    assert c.action is Action.ADOPT and c.set_archived is True and c.phase == 3


def test_ambiguous_name_is_an_error_for_that_key_only():
    plan = plan_of(
        [dg("chess", "Chess"), dg("go", "Go")],
        [grp("g1", "Chess"), grp("g2", "Chess", archived=True)],
    )
    assert [c.key for c in plan.changes] == ["go"]
    (msg,) = messages(plan)["chess"]
    assert "2 groups are named 'Chess' (g1, g2)" in msg and "`id:`" in msg


def test_pinned_id_is_adopted_whatever_its_name():
    c = only(plan_of([dg("chess", "Chess", id="g2")], [grp("g1", "Chess"), grp("g2", "Other")]))
    assert (c.action, c.group_id) == (Action.ADOPT, "g2")
    assert c.fields == (FieldChange("name", "Other", "Chess", Cause.SPEC),)


def test_pinned_id_that_does_not_exist_is_an_error():
    plan = plan_of([dg("chess", "Chess", id="nope")], [grp("g1", "Chess")])
    assert plan.changes == ()
    assert messages(plan) == {"chess": ["no group has the pinned id nope"]}


def test_pinned_id_managed_by_another_key_is_an_error():
    plan = plan_of(
        [dg("a", "A"), dg("b", "B", id="g1")],
        [grp("g1", "A")],
        [ManagedGroup("a", "g1", applied("A"))],
    )
    assert plan.changes == ()
    assert messages(plan) == {"b": ["group g1 is already managed by key 'a'"]}


def test_one_group_pinned_by_two_keys_is_an_error_for_both():
    plan = plan_of([dg("a", id="g1"), dg("b", id="g1")], [grp("g1", "X")])
    assert plan.changes == ()
    assert messages(plan) == {
        "a": ["group g1 is pinned by several keys: a, b"],
        "b": ["group g1 is pinned by several keys: a, b"],
    }


def test_one_group_matched_by_name_from_two_keys_is_an_error_for_both():
    plan = plan_of([dg("a", "X"), dg("b", "X"), dg("c", "C")], [grp("g1", "X")])
    assert [c.key for c in plan.changes] == ["c"]
    errs = messages(plan)
    assert set(errs) == {"a", "b"} and "matches this key and b by name" in errs["a"][0]


def test_managed_and_pinned_groups_are_not_adoption_candidates():
    plan = plan_of(
        [dg("a", "Old name"), dg("b", "X"), dg("c", "Y"), dg("d", "D", id="g3")],
        [grp("g1", "X"), grp("g3", "Y")],
        [ManagedGroup("a", "g1", applied("X"))],
    )
    by_key = {c.key: c for c in plan.changes}
    assert by_key["a"].action is Action.UPDATE
    assert by_key["b"].action is Action.CREATE
    assert by_key["c"].action is Action.CREATE
    assert (by_key["d"].action, by_key["d"].group_id) == (Action.ADOPT, "g3")


def test_unmanaged_groups_are_never_touched():
    plan = plan_of([], [grp("g1", "A"), grp("g2", "B", archived=True)], [])
    assert plan.changes == () and plan.errors == () and plan.empty


def test_a_key_renamed_with_its_group_pinned_moves_instead_of_archive_and_create():
    plan = plan_of(
        [dg("new-key", "A", id="g1")],
        [grp("g1", "A")],
        [ManagedGroup("old-key", "g1", applied("A"))],
    )
    # The journal maps a group to one key: the old mapping goes first, in a phase of its own.
    assert [(c.phase, c.key, c.action, c.group_id) for c in plan.changes] == [
        (-1, "old-key", Action.FORGET, "g1"),
        (1, "new-key", Action.ADOPT, "g1"),
    ]
    assert "moved to key 'new-key'" in plan.changes[0].note
    assert "moved from key 'old-key'" in plan.changes[1].note


def test_a_move_whose_new_key_has_an_error_leaves_the_old_key_alone():
    plan = plan_of(
        [dg("new-key", "A", id="g1", members=["ghost"])],
        [grp("g1", "A")],
        [ManagedGroup("old-key", "g1", applied("A"))],
        known=frozenset({"ada"}),
    )
    assert plan.changes == () and list(messages(plan)) == ["new-key"]


def test_a_managed_key_pinned_to_another_group_switches_to_it():
    c = only(
        plan_of(
            [dg("a", "A", id="g2")],
            [grp("g1", "A"), grp("g2", "A")],
            [ManagedGroup("a", "g1", applied("A"))],
        )
    )
    assert (c.action, c.group_id) == (Action.ADOPT, "g2") and "g1" in c.note


def test_handing_a_group_between_two_live_keys_takes_two_applies():
    plan = plan_of(
        [dg("a", "A", id="g2"), dg("b", "B", id="g1")],
        [grp("g1", "A"), grp("g2", "B")],
        [ManagedGroup("a", "g1", applied("A"))],
    )
    assert plan.changes == ()
    assert messages(plan) == {
        "a": [
            "group g1, managed by this key, is pinned by key b: drop that `id:` until this "
            "key has moved to g2"
        ],
        "b": ["group g1 is already managed by key 'a'"],
    }


def test_managed_group_that_vanished_is_created_again_as_drift():
    c = only(plan_of([dg("a", "A")], [grp("g9", "B")], [ManagedGroup("a", "g1", applied("A"))]))
    assert (c.action, c.cause, c.note) == (Action.CREATE, Cause.DRIFT, "deleted out of band")
    assert c.fields == (FieldChange("name", None, "A", Cause.DRIFT),)


def test_vanished_group_adopts_the_one_group_with_its_name_instead_of_a_second_create():
    # A recreate that crashed or timed out after its POST landed left g9, unmapped: adopt it.
    c = only(plan_of([dg("a", "A")], [grp("g9", "A")], [ManagedGroup("a", "g1", applied("A"))]))
    assert (c.action, c.group_id) == (Action.ADOPT, "g9")
    assert c.note == "deleted out of band; adopted the group by name"


def test_vanished_group_with_several_namesakes_asks_for_a_pin():
    plan = plan_of(
        [dg("a", "A")], [grp("g8", "A"), grp("g9", "A")], [ManagedGroup("a", "g1", applied("A"))]
    )
    assert plan.changes == ()
    assert "pin the one to adopt with `id:`" in messages(plan)["a"][0]


def test_pinned_managed_group_that_vanished_is_an_error_not_a_silent_new_id():
    plan = plan_of([dg("a", "A", id="g1")], [], [ManagedGroup("a", "g1", applied("A"))])
    assert plan.changes == ()
    assert "pinned group g1 no longer exists" in messages(plan)["a"][0]


# --- fields, members, archived ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [
        (UNSET, "kept", ()),
        ("same", "same", ()),
        (None, "old", (FieldChange("description", "old", None, Cause.SPEC),)),
        ("new", None, (FieldChange("description", None, "new", Cause.SPEC),)),
        (None, None, ()),
    ],
    ids=["omitted-not-compared", "equal", "null-clears", "set", "null-equal"],
)
def test_description_omitted_is_left_alone_and_null_clears(desired, actual, expected):
    plan = plan_of(
        [dg("a", "A", description=desired)],
        [grp("g1", "A", description=actual)],
        [ManagedGroup("a", "g1", None)],
    )
    assert tuple(f for c in plan.changes for f in c.fields) == expected


def test_avatar_and_name_changes_are_each_reported_old_to_new():
    c = only(
        plan_of(
            [dg("a", "New", avatar_url="https://x/new.png")],
            [grp("g1", "Old", avatar_url="https://x/old.png")],
            [ManagedGroup("a", "g1", None)],
        )
    )
    assert c.action is Action.UPDATE and c.phase == 1
    assert [(f.field, f.old, f.new) for f in c.fields] == [
        ("name", "Old", "New"),
        ("avatar_url", "https://x/old.png", "https://x/new.png"),
    ]


def test_members_not_managed_are_not_compared():
    plan = plan_of(
        [dg("a", "A", members=None)], [grp("g1", "A", ("x",))], [ManagedGroup("a", "g1")]
    )
    assert plan.changes == ()


def test_member_changes_list_additions_removals_and_the_full_sorted_list():
    c = only(
        plan_of(
            [dg("a", "A", members=["hector", "ada", "zoe"])],
            [grp("g1", "A", ("cliff", "ada", "bob"))],
            [ManagedGroup("a", "g1")],
        )
    )
    assert c.members_add == ("hector", "zoe")
    assert c.members_remove == ("bob", "cliff")
    assert c.members == ("ada", "hector", "zoe")
    assert c.phase == 2


def test_empty_member_list_removes_everyone():
    c = only(
        plan_of([dg("a", "A", members=[])], [grp("g1", "A", ("x",))], [ManagedGroup("a", "g1")])
    )
    assert c.members == () and c.members_remove == ("x",)


def test_additions_only_are_phase_one():
    c = only(plan_of([dg("a", "A", members=["x"])], [grp("g1", "A")], [ManagedGroup("a", "g1")]))
    assert c.phase == 1 and c.members_add == ("x",)


@pytest.mark.parametrize(
    ("want_archived", "is_archived", "action", "set_archived", "phase"),
    [
        (True, False, Action.ARCHIVE, True, 3),
        (False, True, Action.RESTORE, False, 0),
        (True, True, None, None, None),
        (False, False, None, None, None),
    ],
)
def test_archive_and_restore_follow_the_spec(
    want_archived, is_archived, action, set_archived, phase
):
    plan = plan_of(
        [dg("a", "A", archived=want_archived)],
        [grp("g1", "A", archived=is_archived)],
        [ManagedGroup("a", "g1")],
    )
    if action is None:
        assert plan.changes == ()
    else:
        c = only(plan)
        assert (c.action, c.set_archived, c.phase) == (action, set_archived, phase)


def test_restore_carries_field_updates_in_the_same_write():
    c = only(
        plan_of(
            [dg("a", "New")],
            [grp("g1", "Old", archived=True)],
            [ManagedGroup("a", "g1", applied("Old", archived=True))],
        )
    )
    assert c.action is Action.RESTORE and c.fields[0].new == "New" and c.phase == 0


# --- cause ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_applied", "desired", "actual", "cause"),
    [
        (None, "B", "A", Cause.SPEC),  # never applied (or adopted): the spec asks
        ("A", "B", "A", Cause.SPEC),  # spec edited since the last apply
        ("B", "B", "A", Cause.DRIFT),  # spec unchanged, someone renamed it by hand
        ("A", "B", "C", Cause.SPEC),  # both moved: the spec's edit is the news
    ],
)
def test_field_cause_is_spec_when_the_spec_moved_else_drift(last_applied, desired, actual, cause):
    state = None if last_applied is None else applied(last_applied)
    c = only(plan_of([dg("a", desired)], [grp("g1", actual)], [ManagedGroup("a", "g1", state)]))
    assert c.cause is cause and c.fields[0].cause is cause


@pytest.mark.parametrize(
    ("last_applied", "cause"),
    [(None, Cause.SPEC), (("x",), Cause.SPEC), (("x", "y"), Cause.DRIFT)],
)
def test_member_cause(last_applied, cause):
    c = only(
        plan_of(
            [dg("a", "A", members=["x", "y"])],
            [grp("g1", "A", ("x",))],
            [ManagedGroup("a", "g1", applied("A", members=last_applied))],
        )
    )
    assert c.members_cause is cause and c.cause is cause


@pytest.mark.parametrize(("last_archived", "cause"), [(True, Cause.SPEC), (False, Cause.DRIFT)])
def test_restore_cause(last_archived, cause):
    c = only(
        plan_of(
            [dg("a", "A")],
            [grp("g1", "A", archived=True)],
            [ManagedGroup("a", "g1", applied("A", archived=last_archived))],
        )
    )
    assert c.action is Action.RESTORE and c.archived_cause is cause and c.cause is cause


def test_what_was_applied_is_read_only_for_a_group_that_differs():
    """The journal hands `applied` over unread: for a no-op plan of 100,000 groups, reading
    them all was most of a second. Drift is still told from a spec edit where it matters."""
    read: list[str] = []

    def stored(key: str, name: str) -> ManagedGroup:
        def parse(text: str) -> AppliedState:
            read.append(text)
            return applied(text)

        return ManagedGroup(key, f"g-{key}", name, read=parse)

    plan = plan_of(
        [dg("a", "A"), dg("b", "B"), dg("c", "C")],
        [grp("g-a", "A"), grp("g-b", "B"), grp("g-c", "renamed")],
        [stored("a", "A"), stored("b", "B"), stored("c", "C")],
    )
    assert only(plan).cause is Cause.DRIFT
    assert read == ["C"]


def test_overall_cause_is_spec_when_any_part_is_spec():
    c = only(
        plan_of(
            [dg("a", "A", description="new")],
            [grp("g1", "hand-renamed", description="old")],
            [ManagedGroup("a", "g1", applied("A", description="old"))],
        )
    )
    assert [f.cause for f in c.fields] == [Cause.DRIFT, Cause.SPEC]
    assert c.cause is Cause.SPEC


# --- keys removed from the spec -----------------------------------------------------------------


def removed(policy: Policy, archived: bool = False, exists: bool = True) -> Plan:
    actual = [grp("g1", "Old", archived=archived)] if exists else []
    keep = [dg(f"k{i}", f"K{i}") for i in range(3)]
    keep_groups = [grp(f"h{i}", f"K{i}") for i in range(3)]
    keep_managed = [ManagedGroup(f"k{i}", f"h{i}") for i in range(3)]
    return plan_of(
        keep,
        actual + keep_groups,
        [ManagedGroup("old", "g1", applied("Old")), *keep_managed],
        policy,
    )


def test_removed_key_is_archived_by_default():
    c = only(removed(Policy()))
    assert (c.action, c.set_archived, c.cause, c.phase) == (Action.ARCHIVE, True, Cause.SPEC, 3)
    assert c.group_id == "g1" and c.name == "Old"


def test_removed_key_already_archived_needs_nothing():
    assert removed(Policy(), archived=True).empty


def test_removed_key_with_on_removed_ignore_is_forgotten_without_an_api_call():
    c = only(removed(Policy(on_removed="ignore")))
    assert (c.action, c.set_archived, c.group_id) == (Action.FORGET, None, "g1")


def test_removed_key_with_delete_needs_allow_delete():
    plan = removed(Policy(on_removed="delete"))
    assert plan.changes == ()
    assert "--allow-delete" in messages(plan)["old"][0]
    c = only(removed(Policy(on_removed="delete", allow_delete=True)))
    assert (c.action, c.group_id, c.phase) == (Action.DELETE, "g1", 3)


def test_removed_archived_key_is_still_deleted_when_asked():
    c = only(removed(Policy(on_removed="delete", allow_delete=True), archived=True))
    assert c.action is Action.DELETE


@pytest.mark.parametrize("on_removed", ["archive", "delete"])
def test_protected_key_is_never_archived_or_deleted(on_removed):
    plan = removed(Policy(on_removed=on_removed, allow_delete=True, protected=frozenset({"old"})))
    assert plan.changes == ()
    assert messages(plan) == {
        "old": [f"protected: removed from the spec but never {on_removed}d (safety.protected)"]
    }


def test_protected_key_the_spec_archives_is_an_error_even_when_forced():
    plan = plan_of(
        [dg("a", "A", archived=True)],
        [grp("g1", "A")],
        [ManagedGroup("a", "g1")],
        Policy(force=True, protected=frozenset({"a"})),
    )
    assert plan.changes == () and "protected" in messages(plan)["a"][0]


def test_removed_key_whose_group_is_gone_is_forgotten():
    c = only(removed(Policy(), exists=False))
    assert c.action is Action.FORGET and "gone" in c.note


# --- members checked against contacts -------------------------------------------------------------


def test_unknown_username_is_an_error_with_a_suggestion_and_other_keys_still_plan():
    plan = plan_of(
        [dg("a", "A", members=["hectr", "ada"]), dg("b", "B", members=["ada"])],
        [],
        known=frozenset({"ada", "hector", "grace"}),
    )
    assert [c.key for c in plan.changes] == ["b"]
    assert messages(plan) == {"a": ["unknown member 'hectr' (did you mean 'hector'?)"]}


def test_several_unknown_usernames_are_listed_and_capped():
    names = [f"zz{i:02d}" for i in range(12)]
    plan = plan_of([dg("a", "A", members=names)], [], known=frozenset({"ada"}))
    (msg,) = messages(plan)["a"]
    assert msg.startswith("unknown members 'zz00', 'zz01'") and msg.endswith("and 2 more")


def test_usernames_are_not_checked_when_contacts_were_not_read():
    c = only(plan_of([dg("a", "A", members=["whoever"])], [], known=None))
    assert c.members == ("whoever",)


def test_over_a_thousand_members_is_an_error_for_that_key():
    plan = plan_of([dg("a", "A", members=[f"u{i}" for i in range(1001)]), dg("b", "B")])
    assert [c.key for c in plan.changes] == ["b"]
    assert messages(plan) == {"a": ["1001 members is over the limit of 1000"]}


def test_usernames_to_verify_are_those_no_group_shows_yet():
    desired = {
        "a": dg("a", members=["ada", "new1"]),
        "b": dg("b", members=None),
        "c": dg("c", members=["grace", "new2"]),
    }
    actual = [grp("g1", "X", ("ada",)), grp("g2", "Y", ("grace", "zed"), archived=True)]
    assert usernames_to_verify(desired, actual) == {"new1", "new2"}
    assert usernames_to_verify({"a": dg("a", members=["ada"])}, actual) == frozenset()


# --- safety limits -------------------------------------------------------------------------------


def fleet(n: int, members: int = 0):
    """n managed groups in sync with the spec."""
    desired = [
        dg(f"k{i:03d}", f"K{i}", members=[f"u{j}" for j in range(members)]) for i in range(n)
    ]
    actual = [grp(f"g{i:03d}", f"K{i}", tuple(f"u{j}" for j in range(members))) for i in range(n)]
    managed = [ManagedGroup(f"k{i:03d}", f"g{i:03d}") for i in range(n)]
    return desired, actual, managed


def test_archiving_more_than_the_fraction_is_refused_but_shown_in_full():
    desired, actual, managed = fleet(40)
    plan = plan_of(desired[12:], actual, managed)
    assert plan.refusals == ("would archive 12 of 40 managed groups (30% > 25%)",)
    assert plan.refused and len(plan.changes) == 12


def test_archiving_exactly_the_fraction_is_allowed():
    desired, actual, managed = fleet(40)
    assert plan_of(desired[10:], actual, managed).refusals == ()


def test_empty_spec_never_wipes_the_account():
    _, actual, managed = fleet(40)
    plan = plan_of([], actual, managed)
    assert plan.refusals == ("would archive 40 of 40 managed groups (100% > 25%)",)


def test_spec_archives_count_with_removals():
    desired, actual, managed = fleet(20)
    desired = [dg(d.key, d.name, archived=True) if i < 3 else d for i, d in enumerate(desired)]
    plan = plan_of(desired[:18], actual, managed)
    assert plan.refusals == ()  # 3 archived + 2 removed: 25% is not over 25%
    plan = plan_of(desired[:17], actual, managed)
    assert plan.refusals == ("would archive 6 of 20 managed groups (30% > 25%)",)


def test_deletes_count_towards_the_archive_limit():
    desired, actual, managed = fleet(20)
    desired = [dg(d.key, d.name, archived=True) if i < 2 else d for i, d in enumerate(desired)]
    policy = Policy(on_removed="delete", allow_delete=True)
    plan = plan_of(desired[:16], actual, managed, policy)
    assert plan.refusals == ("would archive 2 and delete 4 of 20 managed groups (30% > 25%)",)
    plan = plan_of(desired[:14], [*actual], managed, policy)
    assert "would archive 2 and delete 6 of 20" in plan.refusals[0]
    plan = plan_of([dg(d.key, d.name) for d in desired[:14]], actual, managed, policy)
    assert plan.refusals == ("would delete 6 of 20 managed groups (30% > 25%)",)


def test_below_ten_managed_groups_more_than_half_needs_force():
    desired, actual, managed = fleet(5)
    assert plan_of(desired[2:], actual, managed).refusals == ()  # 2 of 5
    assert plan_of(desired[3:], actual, managed).refusals == (
        "would archive 3 of 5 managed groups (60% > 50%, the limit below 10 managed groups)",
    )


def test_removing_more_than_the_fraction_of_memberships_is_refused():
    desired, actual, managed = fleet(10, members=10)  # 100 memberships
    trimmed = [dg(d.key, d.name, members=sorted(d.members)[3:]) for d in desired]  # 3 per group
    plan = plan_of(trimmed, actual, managed)
    assert plan.refusals == ("would remove 30 of 100 managed memberships (30% > 25%)",)
    ok = [dg(d.key, d.name, members=sorted(d.members)[2:]) for d in desired]
    assert plan_of(ok, actual, managed).refusals == ()


def test_memberships_below_ten_groups_use_half():
    desired, actual, managed = fleet(2, members=10)
    trimmed = [dg(d.key, d.name, members=[]) for d in desired]
    assert plan_of(trimmed, actual, managed).refusals == (
        "would remove 20 of 20 managed memberships (100% > 50%, the limit below 10 managed groups)",
    )


@pytest.mark.parametrize(("members", "kept"), [(1, 0), (3, 1), (10, 0), (12, 2)])
def test_up_to_ten_membership_removals_are_never_refused(members: int, kept: int):
    """A small account's first apply: adopting a group and setting its members is normal work."""
    desired, actual, _ = fleet(1, members=members)
    trimmed = [dg(d.key, d.name, members=sorted(d.members)[:kept]) for d in desired]
    plan = plan_of(trimmed, actual, [])
    assert len(only(plan).members_remove) == members - kept <= 10
    assert plan.refusals == ()


def test_over_ten_removals_and_over_the_fraction_is_still_refused():
    desired, actual, _ = fleet(1, members=12)
    trimmed = [dg(d.key, d.name, members=[]) for d in desired]
    assert plan_of(trimmed, actual, []).refusals == (
        "would remove 12 of 12 managed memberships (100% > 50%, the limit below 10 managed groups)",
    )


@pytest.mark.parametrize(("groups", "members"), [(4, 10), (10, 4)])
def test_a_wipe_of_30_of_40_memberships_is_refused_at_any_size(groups: int, members: int):
    desired, actual, managed = fleet(groups, members=members)
    trimmed, left = [], 30
    for d in desired:
        cut = min(left, len(d.members))
        left -= cut
        trimmed.append(dg(d.key, d.name, members=sorted(d.members)[cut:]))
    plan = plan_of(trimmed, actual, managed)
    assert sum(len(c.members_remove) for c in plan.changes) == 30
    assert plan.refusals[0].startswith("would remove 30 of 40 managed memberships (75% > ")


def test_an_empty_spec_on_a_small_account_is_still_refused():
    _, actual, managed = fleet(3, members=2)
    assert plan_of([], actual, managed).refusals == (
        "would archive 3 of 3 managed groups (100% > 50%, the limit below 10 managed groups)",
    )


def test_the_removal_floor_is_a_setting():
    desired, actual, _ = fleet(1, members=3)
    trimmed = [dg(d.key, d.name, members=[]) for d in desired]
    plan = plan_of(trimmed, actual, [], Policy(min_member_removals=0))
    assert plan.refusals == (
        "would remove 3 of 3 managed memberships (100% > 50%, the limit below 10 managed groups)",
    )
    assert plan_of(trimmed, actual, [], Policy(min_member_removals=2)).refused
    assert not plan_of(trimmed, actual, [], Policy(min_member_removals=3)).refused


def test_adopted_groups_count_as_managed_for_the_limits():
    desired, actual, _ = fleet(10, members=4)
    emptied = [dg(d.key, d.name, members=[]) for d in desired]
    plan = plan_of(emptied, actual, [])
    assert all(c.action is Action.ADOPT for c in plan.changes)
    assert plan.refusals == ("would remove 40 of 40 managed memberships (100% > 25%)",)


def test_force_lifts_refusals_but_keeps_every_change():
    _, actual, managed = fleet(40)
    plan = plan_of([], actual, managed, Policy(force=True))
    assert plan.refusals == () and len(plan.changes) == 40


def test_custom_fractions_are_honoured():
    desired, actual, managed = fleet(40)
    plan = plan_of(desired[4:], actual, managed, Policy(max_archive_fraction=0.05))
    assert plan.refusals == ("would archive 4 of 40 managed groups (10% > 5%)",)


def test_recreating_many_vanished_groups_is_refused_as_a_likely_short_list_read():
    desired, actual, managed = fleet(40)
    assert plan_of(desired, actual[10:], managed).refusals == ()  # 10 of 40
    plan = plan_of(desired, actual[12:], managed)
    assert len(plan.changes) == 12
    assert plan.refusals == (
        "would recreate 12 of 40 managed groups the API no longer lists (30% > 25%)",
    )


def test_an_empty_list_from_the_api_is_refused_not_recreated():
    desired, _, managed = fleet(40)
    assert plan_of(desired, [], managed).refusals == (
        "would recreate 40 of 40 managed groups the API no longer lists (100% > 25%)",
    )


def test_small_accounts_recreate_vanished_groups_without_force():
    desired, _, managed = fleet(5)
    plan = plan_of(desired, [], managed)
    assert plan.refusals == () and len(plan.changes) == 5


# --- order, canonical JSON, checksum --------------------------------------------------------------


def mixed_inputs():
    desired = [
        dg("a-new", "New"),
        dg("b-restore", "R"),
        dg("c-add", "C", members=["x", "y"]),
        dg("d-remove", "D", members=[]),
        dg("e-archive", "E", archived=True),
        dg("f-rename", "F2"),
    ]
    actual = [
        grp("g2", "R", archived=True),
        grp("g3", "C", ("x",)),
        grp("g4", "D", ("x",)),
        grp("g5", "E"),
        grp("g6", "F"),
        grp("g7", "Gone"),
    ]
    managed = [
        ManagedGroup("b-restore", "g2"),
        ManagedGroup("c-add", "g3"),
        ManagedGroup("d-remove", "g4"),
        ManagedGroup("e-archive", "g5"),
        ManagedGroup("f-rename", "g6"),
        ManagedGroup("aa-removed", "g7"),
    ]
    return desired, actual, managed


def test_changes_are_ordered_by_phase_then_key():
    plan = plan_of(*mixed_inputs(), Policy(force=True))
    assert [(c.phase, c.key) for c in plan.changes] == [
        (0, "a-new"),
        (0, "b-restore"),
        (1, "c-add"),
        (1, "f-rename"),
        (2, "d-remove"),
        (3, "aa-removed"),
        (3, "e-archive"),
    ]
    plan = plan_of(*mixed_inputs(), Policy(force=True, on_removed="ignore"))
    assert [(c.phase, c.key) for c in plan.changes][:2] == [(-1, "aa-removed"), (0, "a-new")]


def test_plan_is_deterministic_whatever_the_input_order():
    desired, actual, managed = mixed_inputs()
    first = plan_json(plan_of(desired, actual, managed))
    rnd = random.Random(7)
    for _ in range(5):
        rnd.shuffle(desired)
        rnd.shuffle(actual)
        rnd.shuffle(managed)
        assert plan_json(plan_of(desired, actual, managed)) == first


def test_a_plan_is_plain_data_that_round_trips_through_canonical_json():
    plan = plan_of(*mixed_inputs())
    text = plan_json(plan)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert json.loads(text) == plan.to_dict()
    assert json.loads(text)["changes"][0] == {
        "action": "create",
        "archived_cause": None,
        "cause": "spec",
        "fields": [{"cause": "spec", "field": "name", "new": "New", "old": None}],
        "group_id": None,
        "key": "a-new",
        "members": None,
        "members_add": [],
        "members_cause": None,
        "members_remove": [],
        "name": "New",
        "note": "",
        "phase": 0,
        "set_archived": None,
    }


def test_checksum_is_sha256_of_the_canonical_changes_and_errors():
    plan = plan_of(*mixed_inputs(), known=frozenset({"x"}))
    doc = plan.to_dict()
    body = canonical_json({"changes": doc["changes"], "errors": doc["errors"]})
    assert plan.checksum == hashlib.sha256(body.encode()).hexdigest()


def test_checksum_ignores_refusals_so_a_reviewed_plan_can_be_forced():
    _, actual, managed = fleet(40)
    refused = plan_of([], actual, managed)
    forced = plan_of([], actual, managed, Policy(force=True))
    assert refused.refused and not forced.refused
    assert refused.checksum == forced.checksum


def test_checksum_changes_with_any_change():
    desired, actual, managed = mixed_inputs()
    base = plan_of(desired, actual, managed).checksum
    desired[0] = dg("a-new", "New!")
    assert plan_of(desired, actual, managed).checksum != base


def test_errors_are_sorted_and_part_of_the_checksum():
    plan = plan_of(
        [dg("b", "B", members=["q"]), dg("a", "A", members=["q"])], [], known=frozenset()
    )
    assert [e.key for e in plan.errors] == ["a", "b"]
    assert plan.checksum != Plan(plan.changes).checksum
    assert plan.errors[0] == GroupError("a", "unknown member 'q'")


def test_counts_cover_every_action_and_errors():
    plan = plan_of(*mixed_inputs(), known=None)
    assert plan.counts == {
        "create": 1,
        "adopt": 0,
        "update": 3,
        "restore": 1,
        "archive": 2,
        "delete": 0,
        "forget": 0,
        "errors": 0,
    }


def test_empty_plan():
    desired, actual, managed = fleet(3, members=2)
    plan = plan_of(desired, actual, managed)
    assert plan.empty and not plan.refused and plan.managed_count == 3
    assert plan.checksum == Plan(()).checksum


def test_only_changes_that_edit_the_account_count_as_writes():
    plan = plan_of(
        [dg("same", "Same"), dg("edit", "Edited"), dg("new", "New")],
        [grp("g1", "Same"), grp("g2", "Edit")],
        [ManagedGroup("edit", "g2", applied("Edit"))],
    )
    assert {c.key: c.writes for c in plan.changes} == {"same": False, "edit": True, "new": True}
