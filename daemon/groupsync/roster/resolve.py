"""A spec's recipe + its rosters as read now -> the groups of one run.

Read every roster once, whole; generate the rules' groups; fill in each `@roster:group`; then
check what only the data can show: a generated key must belong to one rule and to no
hand-written group, and a reference must name a group its roster has.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from groupsync.desired import MAX_MEMBERS, DesiredGroup
from groupsync.models import Members
from groupsync.roster.csvlist import CsvRoster, read_csv_roster
from groupsync.roster.generate import Generation, generate
from groupsync.roster.issues import RosterError
from groupsync.roster.oneroster import OneRoster, read_oneroster
from groupsync.roster.recipe import Origins, Recipe, RosterSource
from groupsync.roster.summary import RosterSummary
from groupsync.strictmodel import did_you_mean
from groupsync.yamlstrict import Issue


@dataclass
class Resolved:
    groups: dict[str, DesiredGroup] = field(default_factory=dict)  # by key, sorted
    origins: dict[str, Origins] = field(default_factory=dict)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    rosters: tuple[RosterSummary, ...] = ()


def resolve(recipe: Recipe, now: dt.datetime) -> Resolved:
    out = Resolved()
    read: dict[str, OneRoster | CsvRoster] = {}
    for name, source in recipe.sources.items():
        try:
            read[name] = _read(source, now)
        except RosterError as e:
            out.errors.extend(e.issues)
    if out.errors:
        return out
    generation = Generation()
    for rule in recipe.rules:
        roster = read[rule.roster]
        assert isinstance(roster, OneRoster)  # the loader checked the rule's roster's kind
        generate(rule, roster, generation)
    out.errors += generation.errors + generation.problems.errors
    for roster in read.values():
        out.warnings += roster.warnings
    out.warnings += generation.problems.warnings()
    groups = _hand_written(recipe, read, out)
    for key, made in generation.groups.items():
        other = recipe.groups.get(key)
        if other is not None:
            message = (
                f"{made.rule.label} generates key {key!r} from {made.row}, which is also the"
                f" group at {other.location}"
            )
            out.errors.append(Issue(made.rule.location, made.rule.label, message))
        groups[key] = made.group
    out.groups = {key: groups[key] for key in sorted(groups)}
    out.rosters = tuple(_summary(name, read[name], recipe, generation) for name in read)
    return out


def _read(source: RosterSource, now: dt.datetime) -> OneRoster | CsvRoster:
    if source.kind == "oneroster":
        return read_oneroster(source.path, source.shown, source.username, now)
    return read_csv_roster(source.path, source.shown)


def _hand_written(
    recipe: Recipe, read: dict[str, OneRoster | CsvRoster], out: Resolved
) -> dict[str, DesiredGroup]:
    """The hand-written groups, each `@roster:group` replaced by that group's members."""
    groups = dict(recipe.groups)
    for key, refs in recipe.refs.items():
        group = groups[key]
        users = set(group.members or ())
        origins = out.origins[key] = {}  # only the users the rosters bring
        for ref in refs:
            roster = read[ref.roster]
            assert isinstance(roster, CsvRoster)  # the loader checked the reference's kind
            roster_users = roster.groups.get(ref.group)
            if roster_users is None:
                hint = did_you_mean(ref.group, roster.groups, prefix=f"@{ref.roster}:")
                message = f"'@{ref.text}': roster {ref.roster!r} has no group {ref.group!r}{hint}"
                out.errors.append(Issue(ref.location, f"groups.{key}.members", message))
                continue
            for user in roster_users:
                if user not in users:
                    users.add(user)
                    origins[user] = (ref.location, ref.text)
        members = Members(users)
        if len(members) > MAX_MEMBERS:
            message = (
                f"{len(members)} members with its rosters', over the limit of {MAX_MEMBERS}:"
                " an error in the plan (the other groups still apply)"
            )
            out.warnings.append(Issue(group.location, f"groups.{key}", message))
        groups[key] = replace(group, members=members)
    return groups


def _summary(
    name: str, roster: OneRoster | CsvRoster, recipe: Recipe, generation: Generation
) -> RosterSummary:
    kind = recipe.sources[name].kind
    if isinstance(roster, CsvRoster):
        members = sum(len(users) for users in roster.groups.values())
        return RosterSummary(
            name, kind, roster.digest, 1, roster.rows, groups=len(roster.groups), members=members
        )
    made = [g for g in generation.groups.values() if g.rule.roster == name]
    return RosterSummary(
        name,
        kind,
        roster.digest,
        roster.files,
        roster.rows,
        classes=len(roster.classes),
        users=roster.users,
        enrollments=roster.enrollments,
        groups=len(made),
        members=sum(len(g.group.members or ()) for g in made),
        generated=tuple(sorted(g.group.key for g in made)),
    )
