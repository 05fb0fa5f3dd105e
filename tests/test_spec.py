"""The spec loader on valid input: what it yields, what stays distinct, what the digest ignores."""

from __future__ import annotations

import gc
import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from groupsync.canonical import canonical_json
from groupsync.models import UNSET
from groupsync.spec import (
    DesiredGroup,
    SpecError,
    digest,
    dump_spec,
    json_schema,
    load_spec,
    member_origin,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_campus_loads_with_sets_expanded() -> None:
    spec = load_spec(EXAMPLES / "groups")
    assert spec.files == (
        "groups/clubs.yaml",
        "groups/courses.yaml",
        "groups/notify.yaml",
        "groups/sets.yaml",
        "groups/staff.yaml",
    )
    assert spec.warnings == ()
    assert spec.notify.admin_group == "staff-room"
    assert list(spec.groups) == sorted(spec.groups)
    staff = spec.groups["staff-room"]
    assert staff.members is not None and len(staff.members) == 10  # nested sets, flattened
    assert {"prof.ada", "ta.grace", "dean.edsger", "coach.radia"} <= staff.members
    hiking = spec.groups["hiking"]
    assert hiking.members is None and hiking.description is UNSET and hiking.avatar_url is UNSET
    summer = spec.groups["cs099-summer"]
    assert summer.archived and summer.description is None
    assert spec.groups["film-society"].id == "FilmSoc7Qx2LmN4p"
    assert str(spec.groups["cs101"].location) == "groups/courses.yaml:6:3"
    where, via = member_origin(spec, "cs101", "hester")
    assert (str(where), via) == ("groups/courses.yaml:10:35", "cs101-students")


def test_example_schema_file_is_current() -> None:
    """examples/spec.schema.json is what editors load; it must match `groupsync schema`."""
    on_disk = json.loads((EXAMPLES / "spec.schema.json").read_text(encoding="utf-8"))
    assert on_disk == json_schema()


def test_schema_describes_the_document() -> None:
    schema = json_schema()
    group = schema["$defs"]["GroupModel"]
    assert group["additionalProperties"] is False
    assert group["required"] == ["name"]
    assert group["properties"]["name"]["maxLength"] == 100
    assert "default" not in group["properties"]["description"]  # omitted != null
    groups = schema["properties"]["groups"]
    assert groups["additionalProperties"] is False
    assert list(groups["patternProperties"]) == ["^[a-z0-9][a-z0-9._-]{0,63}$"]


def test_omitted_and_null_stay_distinct(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "spec.yaml",
            "groups:\n"
            "  left-alone: {name: A}\n"
            "  cleared: {name: B, description: null, avatar_url: ~, members: []}\n",
        )
    )
    left, cleared = spec.groups["left-alone"], spec.groups["cleared"]
    assert (left.description, left.avatar_url, left.members) == (UNSET, UNSET, None)
    assert (cleared.description, cleared.avatar_url, cleared.members) == (None, None, frozenset())
    assert "description" not in dump_spec({"a": left}) and "description: null" in dump_spec(
        {"b": cleared}
    )


def test_digest_ignores_files_order_and_formatting(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    write(
        one,
        "all.yaml",
        "member_sets:\n  staff: [prof.ada, ta.grace]\n"
        "groups:\n"
        "  cs101: {name: CS 101, members: ['@staff', hector]}\n"
        "  chess: {name: Chess, archived: false}\n",
    )
    split = tmp_path / "split"
    split.mkdir()
    write(split, "b.yaml", "groups:\n  chess:\n    name: 'Chess'\n")
    write(
        split,
        "a.yaml",
        "# courses\ngroups:\n  cs101:\n    members:\n      - hector\n      - ta.grace\n"
        '      - prof.ada\n    name: "CS 101"\n',
    )
    assert load_spec(one).digest == load_spec(split).digest
    write(split, "b.yaml", "groups:\n  chess:\n    name: Chess\n    description: null\n")
    assert load_spec(one).digest != load_spec(split).digest  # null is a change, omitted is not


def test_nested_sets_and_repeats(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "spec.yaml",
            "member_sets:\n"
            "  tas: [ta.grace, ta.linus]\n"
            "  staff: ['@tas', prof.ada]\n"
            "groups:\n"
            "  cs101:\n"
            "    name: CS 101\n"
            "    members: ['@staff', hector, hector, ta.grace]\n",
        )
    )
    assert spec.groups["cs101"].members == {"ta.grace", "ta.linus", "prof.ada", "hector"}
    # A repeat is harmless (membership is a set) but probably a slip: a warning, not an error.
    assert [str(w) for w in spec.warnings] == [
        "spec.yaml:7:33: groups.cs101.members[2]: 'hector' is listed twice"
    ]


def test_keys_are_names_never_yaml_types(tmp_path: Path) -> None:
    """`101:` and `no:` are valid keys; YAML 1.1 would make them an int and a boolean."""
    spec = load_spec(
        write(tmp_path, "spec.yaml", "groups:\n  101: {name: Room}\n  no: {name: 'No'}\n")
    )
    assert list(spec.groups) == ["101", "no"]


def test_unquoted_boolean_username_is_caught(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, "spec.yaml", "groups:\n  g: {name: G, members: [ada, no]}\n"))
    assert str(caught.value) == (
        "spec.yaml:2:31: groups.g.members[1]: expected a string, got the boolean false"
        " (put it in quotes to make it a string)"
    )


def test_plain_aliases_are_fine(tmp_path: Path) -> None:
    """Anchors for reuse are ordinary YAML; only their expansion is bounded."""
    spec = load_spec(
        write(
            tmp_path,
            "spec.yaml",
            "groups:\n  a: {name: A, members: &crew [ada, grace]}\n"
            "  b: {name: B, members: *crew}\n",
        )
    )
    assert spec.groups["b"].members == {"ada", "grace"}


def test_loading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    """load_spec pauses the cyclic collector for speed: it must resume, even after an error,
    and must not switch it on for a caller that had it off."""
    good = write(tmp_path, "good.yaml", "groups: {a: {name: A}}\n")
    bad = write(tmp_path, "bad.yaml", "groups: [\n")
    assert gc.isenabled()
    load_spec(good)
    assert gc.isenabled()
    with pytest.raises(SpecError):
        load_spec(bad)
    assert gc.isenabled()
    gc.disable()
    try:
        load_spec(good)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_name_with_spaces_around_it_is_kept_with_a_warning(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "spec.yaml", "groups:\n  a: {name: ' Chess  '}\n"))
    assert spec.groups["a"].name == " Chess  "
    assert [str(w) for w in spec.warnings] == [
        "spec.yaml:2:13: groups.a.name: name ' Chess  ' starts or ends with spaces,"
        " which members will see"
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("'\u3000'", "name is only spaces"),  # an ideographic space is a space too
        ('"x\\u200fy"', "name has the right-to-left mark (U+200F) at character 2"),
        ('"\\u2066x"', "name has the left-to-right isolate (U+2066) at character 1"),
        ('"x\\u061c"', "name has the arabic letter mark (U+061C) at character 2"),
        ('"a\\x85b"', "name has a control character (U+0085) at character 2"),
        ('"a\\rb"', "name has a carriage return (U+000D) at character 2"),
        ('"\\x7f"', "name has a control character (U+007F) at character 1"),
    ],
)
def test_names_that_do_not_read_as_one_line_of_text_are_errors(
    tmp_path: Path, name: str, message: str
) -> None:
    path = write(tmp_path, "spec.yaml", f"groups:\n  a:\n    name: {name}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"spec.yaml:3:11: groups.a.name: {message}")


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope")


def test_explicit_empty_groups_is_valid(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, "spec.yaml", "groups: {}\n")).groups == {}


# --- property: load -> dump -> load ------------------------------------------------------------

keys = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
# Names a spec accepts: one line of visible text (no controls, separators, bidi controls).
names = st.text(
    st.characters(
        exclude_categories=("Cs", "Cc", "Zl", "Zp"),
        exclude_characters="\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=100,
).filter(str.strip)
usernames = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-éøß]{0,30}", fullmatch=True)
groups_strategy = st.dictionaries(
    keys,
    st.builds(
        DesiredGroup,
        key=st.just(""),
        name=names,
        description=st.one_of(st.just(UNSET), st.none(), any_text),
        avatar_url=st.one_of(st.just(UNSET), st.none(), any_text),
        members=st.one_of(st.none(), st.frozensets(usernames, max_size=20)),
        archived=st.booleans(),
        id=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9]{16}", fullmatch=True)),
    ),
    max_size=8,
).map(lambda gs: {k: DesiredGroup(**{**_fields(g), "key": k}) for k, g in gs.items()})
# One id pinned by two keys is a spec error, not a spec: hypothesis finds such pairs by shrinking.
groups_strategy = groups_strategy.filter(
    lambda gs: len(ids := [g.id for g in gs.values() if g.id]) == len(set(ids))
)


def _fields(group: DesiredGroup) -> dict[str, object]:
    return {name: getattr(group, name) for name in DesiredGroup.__slots__}


@settings(max_examples=100, deadline=None)
@given(groups_strategy)
def test_load_dump_load_is_identity(groups: dict[str, DesiredGroup]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "spec.yaml", dump_spec(groups))
        first = load_spec(path)
        assert first.groups == groups
        text = dump_spec(first.groups)
        path.write_text(text, encoding="utf-8")
        second = load_spec(path)
    assert second.groups == first.groups
    assert second.digest == first.digest
    assert dump_spec(second.groups) == text


@settings(max_examples=100, deadline=None)
@given(groups_strategy)
def test_the_digest_is_the_sha256_of_the_canonical_json(groups: dict[str, DesiredGroup]) -> None:
    """The digest skips sorting keys it built in order: the text must be canonical_json's."""
    state = {key: yaml.safe_load(dump_spec({key: g}))["groups"][key] for key, g in groups.items()}
    for g in state.values():
        if "members" in g:
            g["members"] = sorted(set(g["members"]))
    text = canonical_json(state).encode("utf-8")
    assert digest(groups) == hashlib.sha256(text).hexdigest()


yamlish = st.text(
    st.sampled_from(list("groups:member_sets name\n  -[]{},&*!|>'\"#@%?<=~ab1\t\x85é"))
)


words = st.sampled_from(
    [
        "groups",
        "member_sets",
        "name",
        "members",
        "description",
        "id",
        "archived",
        "cs101",
        "@x",
        "x",
    ]
)
shapes = st.recursive(
    st.none() | st.booleans() | st.integers() | words,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(words, inner, max_size=4),
    max_leaves=20,
).map(lambda data: yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.one_of(yamlish, shapes, st.binary(max_size=200)))
def test_any_input_is_a_spec_or_a_spec_error(content: str | bytes) -> None:
    """Whatever the bytes, the loader answers with a Spec or a SpecError, never a crash."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        try:
            load_spec(path)
        except SpecError as e:
            assert e.issues and all(i.location is not None for i in e.issues)
