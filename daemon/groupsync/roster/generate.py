"""`generate:` rules -> one DesiredGroup per class of a OneRoster export.

A generated key comes from class fields that stay put (`class-{classCode}`), never from the
title: the key is the group's identity, so a retitled section is an update of the same group,
not an archive and a create. A class `tobedeleted` is archived, its membership left as it is
(a group being archived does not first lose everyone).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from groupsync.desired import KEY_PATTERN, MAX_MEMBERS, MAX_NAME, DesiredGroup, name_error
from groupsync.roster.issues import Problems
from groupsync.roster.oneroster import OneRoster, RosterClass
from groupsync.roster.recipe import Rule
from groupsync.strictmodel import did_you_mean
from groupsync.yamlstrict import Issue, Location

_NOT_IN_KEYS = re.compile(r"[^a-z0-9._-]")
_KEY = re.compile(KEY_PATTERN)


def template_fields(
    template: str, expect: str = "{column} with a classes.csv column name"
) -> list[str]:
    """The `{field}` names of a template; ValueError says what else it holds and `expect`s."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or not name.isidentifier() or spec or conversion:
            raise ValueError(
                f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                f" is not a field: write {expect}"
            )
        names.append(name)
    return names


@dataclass(frozen=True, slots=True)
class Generated:
    """A group and where it came from: the class's row, and the rule."""

    group: DesiredGroup
    row: str  # "export/classes.csv:14"
    rule: Rule


@dataclass
class Generation:
    groups: dict[str, Generated] = field(default_factory=dict)
    errors: list[Issue] = field(default_factory=list)
    problems: Problems = field(default_factory=Problems)


def generate(rule: Rule, roster: OneRoster, out: Generation) -> None:
    """Add the rule's groups to `out`; problems with the rule or a class go there too."""
    if not _columns_known(rule, roster, out):
        return
    for cls in roster.classes:
        if all(cls.fields[column] == value for column, value in rule.where.items()):
            _one(rule, roster, cls, out)


def _columns_known(rule: Rule, roster: OneRoster, out: Generation) -> bool:
    ok = True
    templates = [("key", rule.key), ("name", rule.name)]
    if isinstance(rule.description, str):
        templates.append(("description", rule.description))
    used = [("where", column) for column in rule.where]
    used += [(part, name) for part, text in templates for name in template_fields(text)]
    for part, column in used:
        if column not in roster.columns:
            hint = did_you_mean(column, roster.columns)
            message = f"{roster.classes_file} has no column {column!r}{hint}"
            out.errors.append(Issue(rule.location, f"{rule.label}.{part}", message))
            ok = False
    return ok


def _one(rule: Rule, roster: OneRoster, cls: RosterClass, out: Generation) -> None:
    row = f"{roster.classes_file}:{cls.row}"
    key = _NOT_IN_KEYS.sub("-", rule.key.format_map(cls.fields).lower())
    name = rule.name.format_map(cls.fields)
    problem = _key_or_name_error(key, name)
    if problem is not None:
        out.problems.error(roster.classes_file, cls.row, f"{rule.label}: {problem}")
        return
    first = out.groups.get(key)
    if first is not None:
        where = f"{first.rule.label} ({first.rule.location}) from {first.row}"
        message = f"{rule.label} generates key {key!r} from {row}, and so does {where}"
        out.errors.append(Issue(rule.location, rule.label, message))
        return
    members = None
    if not cls.archived:
        members = frozenset().union(*(cls.members.get(role, ()) for role in rule.roles))
        if len(members) > MAX_MEMBERS:
            kind = f"classes over {MAX_MEMBERS} members (each an error in the plan; the rest apply)"
            out.problems.warn(roster.classes_file, cls.row, kind)
    description = rule.description
    if isinstance(description, str):
        description = description.format_map(cls.fields)
    group = DesiredGroup(
        key=key,
        name=name,
        description=description,
        members=members,
        archived=cls.archived,
        location=Location(roster.classes_file, cls.row, 1),
    )
    out.groups[key] = Generated(group, row, rule)


def _key_or_name_error(key: str, name: str) -> str | None:
    if not _KEY.fullmatch(key):
        return (
            f"key {key!r} is not a valid group key (1..64 lowercase letters, digits, '.', '_'"
            " or '-', starting with a letter or digit)"
        )
    if not name:
        return f"name of {key!r} is empty"
    if len(name) > MAX_NAME:
        return f"name of {key!r} is {len(name)} characters long, the limit is {MAX_NAME}"
    problem = name_error(name)
    return None if problem is None else f"{key!r}: {problem}"
