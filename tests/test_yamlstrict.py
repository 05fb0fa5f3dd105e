"""yamlstrict's one-pass builder on what a hand-edited file may hold: aliases, refused keys,
problems of several kinds at once. (The spec corpus covers one problem per file.)"""

from __future__ import annotations

import pytest

from groupsync.yamlstrict import MAX_ALIAS_NODES, YamlError, parse


def problems(text: str, depth: int | None = None) -> list[str]:
    with pytest.raises(YamlError) as raised:
        parse(text, "f.yaml", depth=depth)
    return [str(i) for i in raised.value.issues]


@pytest.mark.parametrize("depth", [None, 1, 2])
def test_an_alias_shares_its_anchor_and_keeps_the_positions_inside_it(depth: int | None) -> None:
    text = "base: &b\n  members: [ada, 5]\ngroups:\n  g: *b\n"
    doc = parse(text, "f.yaml", depth=depth)
    assert doc.data == {"base": {"members": ["ada", 5]}, "groups": {"g": doc.data["base"]}}
    assert doc.data["groups"]["g"] is doc.data["base"]  # shared, not copied
    if depth != 1:  # with depth 1, positions stop at `groups`
        assert str(doc.where(("groups", "g"))) == "f.yaml:4:6"  # the alias, as written
    if depth is None:  # below it: where the anchor's values are written
        assert str(doc.where(("groups", "g", "members", 1))) == "f.yaml:2:18"
        assert ("groups", "g", "members", 1) in doc.plain  # an unquoted 5: YAML guessed a number


def test_an_alias_to_a_scalar_may_be_a_key() -> None:
    assert parse("k: &s name\n*s : 2\n", "f.yaml").data == {"k": "name", "name": 2}


def test_an_alias_may_not_contain_itself() -> None:
    assert problems("a: &x [1, *x]\n") == [
        "f.yaml:1:11: a[1]: an alias refers to itself (recursive anchor)"
    ]


def test_an_alias_bomb_stops_at_the_bound_and_is_reported_alone() -> None:
    levels = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, 6):
        levels.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    text = "\n".join([*levels, "dup: 1", "dup: 2"]) + "\n"
    [issue] = problems(text)
    assert f"aliases expand to more than {MAX_ALIAS_NODES} values" in issue
    assert issue.startswith("f.yaml:4:")  # the first alias past the bound, on the l3 line


def test_a_refused_keys_value_reports_only_what_the_parser_refuses() -> None:
    # The value of a non-string key is not data: a duplicate inside it is not reported, but
    # a tag is, and an anchor in it still serves a later alias.
    text = "[a]: {x: 1, x: 2, y: &v 3}\nz: *v\nt: !!str 4\n"
    tag = "f.yaml:3:4: YAML tags are not allowed (found 'tag:yaml.org,2002:str')"
    assert problems(text) == [tag]
    assert problems("[a]: {x: 1, x: 2, y: &v 3}\nz: *v\n") == [
        "f.yaml:1:1: keys must be plain strings"
    ]


def test_a_syntax_error_is_reported_with_the_tags_before_it_not_the_rest() -> None:
    assert problems("a: !t 1\nb: 1\nb: 2\nc: [\n") == [
        "f.yaml:1:4: YAML tags are not allowed (found '!t')",
        "f.yaml:5:1: YAML syntax error: while parsing a flow node, did not find expected node"
        " content",
    ]


@pytest.mark.parametrize("depth", [None, 2])
def test_a_duplicate_key_below_the_kept_positions_is_still_at_its_place(
    depth: int | None,
) -> None:
    text = "groups:\n  g:\n    name: A\n    members:\n      - ada\n    name: B\n"
    assert problems(text, depth) == [
        "f.yaml:6:5: groups.g: duplicate key 'name' (first defined at line 3)"
    ]
