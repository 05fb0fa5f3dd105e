"""Roster problems at file:row: errors stop the load, warnings are counted by kind.

A registrar's export has thousands of rows; one warning per row would bury the rest of the
output. So a warning kind is said once, with its count and the first rows it was seen on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from groupsync.errors import GroupsyncError
from groupsync.yamlstrict import Issue

SHOWN_ROWS = 5
MAX_ERRORS_PER_FILE = 20  # past this, a file is the wrong file or wholly broken: say how many


def row_issue(file: str, row: int | None, message: str) -> Issue:
    """An Issue placed at `file:row` (the file's line where the record starts)."""
    where = f"{file}:{row}" if row is not None else file
    return Issue(None, "", f"{where}: {message}")


class RosterError(GroupsyncError):
    """A roster that cannot be read as a whole: every problem found, each at file:row."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class Problems:
    """What one roster read found: errors (capped per file) and counted warnings."""

    errors: list[Issue] = field(default_factory=list)
    _errors_in: dict[str, int] = field(default_factory=dict)
    _warned: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def error(self, file: str, row: int | None, message: str) -> None:
        seen = self._errors_in.get(file, 0) + 1
        self._errors_in[file] = seen
        if seen <= MAX_ERRORS_PER_FILE:
            self.errors.append(row_issue(file, row, message))

    def warn(self, file: str, row: int, kind: str) -> None:
        """One more row of warning `kind` ("enrollments for an unknown class")."""
        self._warned.setdefault((file, kind), []).append(row)

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        issues = list(self.errors)
        for file, seen in self._errors_in.items():
            if seen > MAX_ERRORS_PER_FILE:
                more = seen - MAX_ERRORS_PER_FILE
                issues.append(row_issue(file, None, f"and {more} more errors in this file"))
        raise RosterError(issues)

    def warnings(self) -> list[Issue]:
        out = []
        for (file, kind), rows in self._warned.items():
            shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
            more = ", ..." if len(rows) > SHOWN_ROWS else ""
            out.append(row_issue(file, rows[0], f"{len(rows)} {kind} (rows {shown}{more})"))
        return out
