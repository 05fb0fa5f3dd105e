"""A plain CSV roster: one `group,username` pair per row, as clubs and departments keep them.

Other columns are ignored (a club's list often carries names and emails). The spec brings a
group's members in as `@roster:group`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groupsync.roster.issues import Problems
from groupsync.roster.oneroster import UsernameRule
from groupsync.roster.snapshot import Digest, read_still
from groupsync.roster.table import parse
from groupsync.yamlstrict import Issue

_PLAIN = UsernameRule()


@dataclass(frozen=True, slots=True)
class CsvRoster:
    groups: dict[str, frozenset[str]]  # group -> usernames
    rows: int
    digest: str
    warnings: list[Issue]


def read_csv_roster(path: Path, shown: str) -> CsvRoster:
    """Read the list; raises RosterError for a file that cannot be used, at file:row."""
    data = read_still(path, shown)
    problems = Problems()
    table = parse(data, shown, ("group", "username"), problems)
    problems.raise_if_any()
    assert table is not None
    group, username = table.column("group"), table.column("username")
    members: dict[str, set[str]] = {}
    for line, fields in table.rows:
        name = _PLAIN.apply(fields[username])
        if not fields[group].strip():
            problems.warn(shown, line, "rows with no group")
        elif name is None:
            problems.warn(shown, line, "rows with no usable username")
        else:
            members.setdefault(fields[group].strip(), set()).add(name)
    digest = Digest()
    digest.add(path.name, data)
    return CsvRoster(
        groups={g: frozenset(users) for g, users in members.items()},
        rows=len(table.rows),
        digest=digest.hexdigest(),
        warnings=problems.warnings(),
    )
