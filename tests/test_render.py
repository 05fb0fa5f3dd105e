"""Render snapshots: the lines a reviewer relies on, in text, JSON and Markdown."""

from __future__ import annotations

import io
import json

import pytest

from groupsync import render
from groupsync.models import Group
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
)
from groupsync.spec import DesiredGroup


def change(key: str, action: Action, **kw) -> Change:
    kw.setdefault("cause", Cause.SPEC)
    kw.setdefault("name", key.title())
    kw.setdefault("group_id", None if action is Action.CREATE else f"id-{key}")
    return Change(key=key, action=action, **kw)


@pytest.fixture
def sample() -> Plan:
    return Plan(
        changes=(
            change(
                "cs101",
                Action.CREATE,
                name="CS 101",
                fields=(FieldChange("name", None, "CS 101", Cause.SPEC),),
                members_add=("ada", "grace"),
                members=("ada", "grace"),
                members_cause=Cause.SPEC,
            ),
            change("cs102", Action.CREATE, cause=Cause.DRIFT, note="deleted out of band"),
            change(
                "chess",
                Action.UPDATE,
                cause=Cause.SPEC,
                name="Chess Club",
                fields=(
                    FieldChange("name", "Chess", "Chess Club", Cause.SPEC),
                    FieldChange("description", "Old", None, Cause.DRIFT),
                ),
                members_add=("hector",),
                members_remove=("cliff",),
                members=("ada", "hector"),
                members_cause=Cause.DRIFT,
            ),
            change("go", Action.UPDATE, cause=Cause.DRIFT, members_add=("x",), members=("x",)),
            change("poker", Action.UPDATE, members_remove=("y",), members=()),
            change("old", Action.ARCHIVE, set_archived=True, note="removed from the spec"),
        ),
        errors=(GroupError("bad", "unknown member 'hectr' (did you mean 'hector'?)"),),
    )


def test_text_shows_each_action_with_its_symbol_cause_and_values(sample):
    lines = render.render_text(sample).splitlines()
    assert '+ create cs101 "CS 101" (spec)' in lines
    assert '    name: "CS 101"' in lines
    assert "    members: +ada +grace" in lines
    assert '+ create cs102 "Cs102" (drift: deleted out of band)' in lines
    assert '~ update chess "Chess Club" [id-chess] (spec)' in lines
    assert '    name: "Chess" -> "Chess Club"' in lines
    assert '    description: "Old" -> null  (drift)' in lines
    assert "    members: +hector -cliff  (drift)" in lines
    assert '- archive old "Old" [id-old] (spec: removed from the spec)' in lines
    assert "  ! bad: unknown member 'hectr' (did you mean 'hector'?)" in lines
    assert lines[-2] == "Plan: 2 to create, 3 to update, 1 to archive, 0 to restore. 1 error."
    assert lines[-1] == f"Checksum: {sample.checksum}"
    assert "\x1b[" not in "\n".join(lines)


def test_text_marks_restore_adopt_delete_and_forget_distinctly():
    plan = Plan(
        changes=(
            change("r", Action.RESTORE, set_archived=False),
            change("a", Action.ADOPT, note="adopted by name", set_archived=False),
            change("d", Action.DELETE),
            change("f", Action.FORGET, note="moved to key 'g'"),
        )
    )
    lines = render.render_text(plan).splitlines()
    assert '> restore r "R" [id-r] (spec)' in lines
    assert '@ adopt a "A" [id-a] (spec: adopted by name)' in lines
    assert "    archived: true -> false" in lines
    assert 'x delete d "D" [id-d] (spec)' in lines
    assert ". forget f \"F\" [id-f] (spec: moved to key 'g')" in lines
    assert lines[-2] == (
        "Plan: 0 to create, 1 to adopt, 0 to update, 0 to archive, 1 to restore, "
        "1 to delete, 1 to forget."
    )


def test_create_of_an_archived_group_says_so():
    plan = Plan((change("c", Action.CREATE, set_archived=True, members=()),))
    lines = render.render_text(plan).splitlines()
    assert "    archived: true" in lines and "    members: (none)" in lines


def test_archive_cause_is_shown_when_it_differs_from_the_change():
    plan = Plan(
        (
            change(
                "a",
                Action.ARCHIVE,
                set_archived=True,
                archived_cause=Cause.DRIFT,
                fields=(FieldChange("name", "X", "A", Cause.SPEC),),
            ),
        )
    )
    assert "    archived: false -> true  (drift)" in render.render_text(plan).splitlines()


def test_long_member_lists_are_summarised():
    adds = tuple(f"u{i:02d}" for i in range(35))
    plan = Plan((change("big", Action.UPDATE, members_add=adds, members=adds),))
    (line,) = [x for x in render.render_text(plan).splitlines() if "members:" in x]
    assert line == "    members: " + " ".join(f"+u{i:02d}" for i in range(10)) + (
        " ... and 25 more added"
    )


def test_long_values_are_cut():
    plan = Plan(
        (
            change(
                "a",
                Action.UPDATE,
                fields=(FieldChange("description", None, "x" * 500, Cause.SPEC),),
            ),
        )
    )
    (line,) = [x for x in render.render_text(plan).splitlines() if "description" in x]
    assert len(line) < 200 and line.endswith('…"')


def test_refusals_are_shown_prominently_before_the_totals():
    plan = Plan(
        (change("old", Action.ARCHIVE, set_archived=True),),
        refusals=("would archive 12 of 40 managed groups (30% > 25%)",),
    )
    lines = render.render_text(plan).splitlines()
    i = lines.index("REFUSED by safety limits: nothing will be applied without --force:")
    assert lines[i + 1] == "  ! would archive 12 of 40 managed groups (30% > 25%)"
    assert lines[-2].startswith("Plan: ")


def test_empty_plan_says_so():
    assert render.render_text(Plan((), managed_count=7)) == (
        "No changes. 7 managed groups are up to date."
    )


def test_colour_only_when_asked(sample):
    coloured = render.render_text(sample, color=True)
    assert "\x1b[32m+ create cs101\x1b[0m" in coloured
    assert "\x1b[31m- archive old\x1b[0m" in coloured


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "no_color", "expected"),
    [
        (FakeTty(), None, True),
        (FakeTty(), "1", False),
        (FakeTty(), "", True),  # no-color.org: only a non-empty value disables colour
        (io.StringIO(), None, False),
        (object(), None, False),
    ],
)
def test_want_color_needs_a_tty_and_no_NO_COLOR(monkeypatch, stream, no_color, expected):
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    assert render.want_color(stream) is expected


def test_json_document_is_versioned_and_carries_the_plan(sample):
    doc = json.loads(render.render_json(sample))
    assert doc["format_version"] == 1
    assert doc["checksum"] == sample.checksum == doc["plan"]["checksum"]
    assert doc["refused"] is False and doc["empty"] is False
    assert doc["counts"] == {
        "create": 2,
        "adopt": 0,
        "update": 3,
        "restore": 0,
        "archive": 1,
        "delete": 0,
        "forget": 0,
        "errors": 1,
    }
    assert doc["plan"] == json.loads(json.dumps(sample.to_dict()))
    assert doc["plan"]["changes"][2]["fields"][1] == {
        "field": "description",
        "old": "Old",
        "new": None,
        "cause": "drift",
    }
    assert render.render_json(sample) == render.render_json(sample)  # stable text


def test_markdown_starts_with_the_marker_and_collapses_details(sample):
    md = render.render_markdown(sample)
    lines = md.splitlines()
    assert lines[0] == "<!-- groupsync-plan -->"
    assert "| create | 2 |" in lines and "| update | 3 |" in lines
    assert "| adopt | 0 |" not in lines
    assert "| **errors** | **1** |" in lines
    assert "- `bad`: unknown member 'hectr' (did you mean 'hector'?)" in lines
    assert "<details><summary>6 changes</summary>" in lines and "</details>" in lines
    assert "```diff" in lines
    assert '~ update chess "Chess Club" [id-chess] (spec)' in lines
    assert lines[-1] == f"Checksum: `{sample.checksum}`"
    assert "CAUTION" not in md


def test_markdown_shows_refusals_first():
    plan = Plan(
        (change("old", Action.ARCHIVE, set_archived=True),),
        refusals=("would archive 12 of 40 managed groups (30% > 25%)",),
    )
    lines = render.render_markdown(plan).splitlines()
    assert lines[3] == "> [!CAUTION]"
    assert "> - would archive 12 of 40 managed groups (30% &gt; 25%)" in lines


def test_markdown_fence_survives_backticks_in_names():
    plan = Plan((change("a", Action.CREATE, name="x ```` y"),))
    lines = render.render_markdown(plan).splitlines()
    assert "`````diff" in lines and "`````" in lines


def test_markdown_of_a_huge_plan_stays_under_githubs_comment_limit():
    plan = Plan(tuple(change(f"k{i:05d}", Action.CREATE, name="n" * 50) for i in range(3000)))
    md = render.render_markdown(plan)
    assert len(md) < 65_536
    assert "... (cut: run `groupsync plan` for the full plan)" in md
    assert "| create | 3000 |" in md


def test_markdown_of_an_empty_plan():
    md = render.render_markdown(Plan((), managed_count=3))
    assert md.splitlines()[0] == render.MARKER
    assert "No changes. 3 managed groups are up to date." in md and "<details>" not in md


def test_rendering_a_computed_plan_end_to_end():
    desired = {
        "chess": DesiredGroup("chess", "Chess Club", members=frozenset({"ada", "hector"})),
        "new": DesiredGroup("new", "New"),
    }
    actual = [Group("g1", "Chess", members=frozenset({"ada", "cliff"}))]
    managed = {"chess": ManagedGroup("chess", "g1", AppliedState("Chess", None, None, None, False))}
    text = render.render_text(compute_plan(desired, actual, managed, Policy(force=True)))
    assert "    members: +hector -cliff" in text.splitlines()
    assert "Plan: 1 to create, 1 to update, 0 to archive, 0 to restore." in text


def test_control_characters_from_the_account_never_reach_the_terminal():
    evil = "\x1b]0;pwned\x07\u202e"
    plan = Plan(
        (
            change(
                "a",
                Action.UPDATE,
                name=f"Chess{evil}",
                fields=(FieldChange("description", f"x{evil}", None, Cause.DRIFT),),
                members_add=(f"bob{evil}",),
                members=(f"bob{evil}",),
            ),
        ),
        errors=(GroupError("b", f"unknown member 'x{evil}'"),),
    )
    for out in (render.render_text(plan), render.render_markdown(plan)):
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\u001b" in out


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (
            render.StateLine("journal", "/var/lib/groupsync/groupsync.db", 42, 120),
            "State: journal /var/lib/groupsync/groupsync.db (run 42, 120 managed)",
        ),
        (
            render.StateLine("snapshot", "https://h/state", None, 0),
            "State: snapshot https://h/state (no run yet, 0 managed)",
        ),
        (
            render.StateLine("none"),
            "State: none — every key is new; renames and removals cannot be seen",
        ),
    ],
)
def test_every_format_names_the_state(sample, state, line):
    assert render.render_text(sample, state=state).splitlines()[:2] == [line, ""]
    assert render.render_text(Plan((), managed_count=7), state=state).splitlines()[0] == line
    md = render.render_markdown(sample, state=state).splitlines()
    shown = md[md.index("### groupsync plan") + 2 :][:2]
    # No state is a warning a reviewer cannot miss.
    assert shown == (["> [!WARNING]", f"> {line}"] if state.source == "none" else [line, ""])
    doc = json.loads(render.render_json(sample, state=state))
    assert doc["state"] == state.to_dict()
    assert doc["checksum"] == sample.checksum  # the state is not part of the checksum
