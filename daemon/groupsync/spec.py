"""YAML spec -> DesiredGroup values: strict loading, every error at file:line:column.

INTERFACE CONTRACT (issue 3 fills in the loader):
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from groupsync.errors import GroupsyncError
from groupsync.models import UNSET, _Unset

MAX_MEMBERS = 1000
MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    """One group as the spec wants it. UNSET (omitted) leaves a field alone; None clears it."""

    key: str
    name: str
    description: str | _Unset | None = UNSET
    avatar_url: str | _Unset | None = UNSET
    members: frozenset[str] | None = None  # None: membership is not managed
    archived: bool = False
    id: str | None = None  # pinned group id
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SpecIssue:
    location: Location | None
    path: str  # inside the document, e.g. "groups.chess-club.members[2]"
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        inside = f"{self.path}: " if self.path else ""
        return f"{where}{inside}{self.message}"


@dataclass(frozen=True, slots=True)
class Spec:
    groups: dict[str, DesiredGroup]  # ordered by key
    digest: str  # SHA-256 of the canonical desired state
    warnings: tuple[SpecIssue, ...] = ()
    files: tuple[str, ...] = ()


class SpecError(GroupsyncError):
    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def load_spec(path: Path) -> Spec:
    raise NotImplementedError
