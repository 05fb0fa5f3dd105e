"""What the spec says about rosters, kept so they can be read again without the YAML.

The YAML is read once (and again on SIGHUP); rosters change daily and are read on every run.
The loader leaves this recipe behind: the hand-written groups with their `@roster:group`
references still open, the rosters to read and the `generate:` rules. Resolving it against
freshly read rosters gives the spec's groups for one run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from groupsync.desired import DesiredGroup
from groupsync.models import UNSET, Members, _Unset
from groupsync.roster.oneroster import UsernameRule
from groupsync.yamlstrict import Issue, Location

Origins = dict[str, tuple[Location, str | None]]  # username -> (where it comes in, through what)


@dataclass(frozen=True, slots=True)
class SpecFile:
    """A spec file as loaded: where it is, and a digest of its text so that a position looked
    up in it later (for a message) is looked up in the same text."""

    path: Path
    digest: bytes


@dataclass(frozen=True, slots=True)
class RosterSource:
    """One entry of `rosters:`: where its files are, how they are read."""

    name: str
    kind: Literal["oneroster", "csv"]
    path: Path  # resolved against the folder of the spec file that names it
    shown: str  # the path as written, for messages
    username: UsernameRule


@dataclass(frozen=True, slots=True)
class RosterRef:
    """`@roster:group` in a group's members."""

    roster: str
    group: str
    location: Location

    @property
    def text(self) -> str:
        return f"{self.roster}:{self.group}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One `generate:` entry: a group per class of a OneRoster roster."""

    label: str  # "generate[0]", for messages
    location: Location
    roster: str
    where: Mapping[str, str]
    key: str
    name: str
    description: str | _Unset | None = UNSET
    roles: tuple[str, ...] = ("teacher", "student")


@dataclass(frozen=True, slots=True)
class Recipe:
    groups: dict[str, DesiredGroup]  # hand-written, members without their roster references
    refs: dict[str, tuple[RosterRef, ...]]  # key -> roster references in its members
    sources: dict[str, RosterSource]
    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    warnings: tuple[Issue, ...] = field(default=())
    sets: dict[str, Members] = field(default_factory=dict)  # member set -> its usernames
    spec_files: dict[str, SpecFile] = field(default_factory=dict)  # file as shown -> where
