"""A OneRoster 1.1 CSV bulk export -> classes, each with its members by enrollment role.

What a student information system exports (Banner, PeopleSoft, Workday Student, PowerSchool):
a folder or a .zip holding manifest.csv, classes.csv, users.csv and enrollments.csv. Only a
bulk export is read. A delta export lists only what changed since the last one, and reading it
as the whole roster would remove everyone it does not mention.

Who is a member: an enrollment whose status is not `tobedeleted`, whose `endDate` (a UTC date)
has not passed by `now` (given by the caller, so the same files always give the same roster),
in a known class, of an enabled user with a usable username.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from groupsync.roster.issues import Problems, RosterError, row_issue
from groupsync.roster.snapshot import Digest, read_still
from groupsync.roster.table import Table, parse
from groupsync.yamlstrict import Issue

USERNAME_COLUMNS = ("username", "email", "identifier", "sourcedId")
ROLES = ("administrator", "aide", "guardian", "parent", "proctor", "relative", "student", "teacher")
FILES = ("classes", "users", "enrollments")
_REQUIRED = {
    "classes": ("sourcedId", "status", "title"),
    "users": ("sourcedId", "enabledUser"),
    "enrollments": ("sourcedId", "classSourcedId", "userSourcedId", "role"),
}
_USABLE = re.compile(r"[^\s@]\S*")  # a username the spec could have written (no '@' in front)


@dataclass(frozen=True, slots=True)
class UsernameRule:
    """Which users.csv column is the eCampus username; `strip_domain`: "ada@uni.edu" -> "ada"."""

    column: str = "username"
    strip_domain: bool = False

    def apply(self, value: str) -> str | None:
        name = value.strip()
        if self.strip_domain:
            name = name.partition("@")[0]
        return name if _USABLE.fullmatch(name) else None


@dataclass(frozen=True, slots=True)
class RosterClass:
    sourced_id: str
    row: int  # classes.csv line
    fields: dict[str, str]  # column -> value, every column of the row
    archived: bool  # status tobedeleted
    members: dict[str, set[str]] = field(default_factory=dict)  # role -> usernames


@dataclass(frozen=True, slots=True)
class OneRoster:
    classes_file: str
    columns: tuple[str, ...]  # classes.csv header
    classes: list[RosterClass]  # in file order
    files: int
    rows: int
    users: int
    enrollments: int
    digest: str
    warnings: list[Issue]


def read_oneroster(path: Path, shown: str, username: UsernameRule, now: dt.datetime) -> OneRoster:
    """Read the export at `path` (shown as `shown`); raises RosterError listing every problem."""
    files = _Files(path, shown)
    problems = Problems()
    digest = Digest()
    manifest = files.table("manifest", ("propertyName", "value"), problems, digest)
    if manifest is not None:
        _check_manifest(manifest, problems)
    tables = {name: files.table(name, _REQUIRED[name], problems, digest) for name in FILES}
    users_table = tables["users"]
    if users_table is not None and username.column not in users_table.header:
        message = f"has no {username.column!r} column (the roster's `username:` names it)"
        problems.error(users_table.file, 1, message)
    problems.raise_if_any()
    classes, users, enrollments = tables["classes"], tables["users"], tables["enrollments"]
    assert classes is not None and users is not None and enrollments is not None
    by_id = _classes(classes, problems)
    usernames = _users(users, username, problems)
    _enroll(enrollments, by_id, usernames, now.astimezone(dt.UTC).date(), problems)
    problems.raise_if_any()
    return OneRoster(
        classes_file=classes.file,
        columns=classes.header,
        classes=list(by_id.values()),
        files=files.count,
        rows=sum(len(t.rows) for t in tables.values() if t is not None),
        users=len(users.rows),
        enrollments=len(enrollments.rows),
        digest=digest.hexdigest(),
        warnings=problems.warnings(),
    )


class _Files:
    """The export's files, from a folder or a .zip; each read whole and only while it held still."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path, self.shown, self.count = path, shown, 0
        self._zip: zipfile.ZipFile | None = None
        if path.suffix.lower() == ".zip":
            data = read_still(path, shown)
            try:
                self._zip = zipfile.ZipFile(io.BytesIO(data))
            except zipfile.BadZipFile:
                raise RosterError([row_issue(shown, None, "is not a readable .zip")]) from None
        elif not path.is_dir():
            what = "does not exist" if not path.exists() else "is neither a folder nor a .zip"
            raise RosterError([row_issue(shown, None, f"(a OneRoster export) {what}")])

    def table(
        self, name: str, required: Sequence[str], problems: Problems, digest: Digest
    ) -> Table | None:
        file = f"{name}.csv"
        shown = f"{self.shown}/{file}"
        try:
            data = self._read(file, shown)
        except RosterError as e:
            problems.errors.extend(e.issues)
            return None
        self.count += 1
        digest.add(file, data)
        return parse(data, shown, required, problems)

    def _read(self, file: str, shown: str) -> bytes:
        if self._zip is None:
            return read_still(self.path / file, shown)
        try:
            return self._zip.read(file)
        except KeyError:
            raise RosterError([row_issue(shown, None, "does not exist in the .zip")]) from None


def _check_manifest(manifest: Table, problems: Problems) -> None:
    name, value = manifest.column("propertyName"), manifest.column("value")
    declared = {
        fields[name]: (line, fields[value].strip().lower()) for line, fields in manifest.rows
    }
    for file in FILES:
        line, kind = declared.get(f"file.{file}", (None, None))
        if kind == "bulk":
            continue
        if kind == "delta":
            why = (
                "is delta: only a bulk export is read (a delta lists only what changed, and"
                " read as the whole roster it would remove everyone it does not mention)"
            )
        elif kind is None:
            why = "is not declared (it must be bulk)"
        else:
            why = f"is {kind!r}, not bulk"
        problems.error(manifest.file, line, f"file.{file} {why}")


def _duplicate(
    seen: dict[str, int], sourced_id: str, line: int, file: str, problems: Problems
) -> bool:
    first = seen.setdefault(sourced_id, line)
    if first != line:
        problems.error(file, line, f"duplicate sourcedId {sourced_id!r}: also at row {first}")
        return True
    return False


def _classes(table: Table, problems: Problems) -> dict[str, RosterClass]:
    sid, status = table.column("sourcedId"), table.column("status")
    header = table.header
    seen: dict[str, int] = {}
    out: dict[str, RosterClass] = {}
    for line, fields in table.rows:
        if _duplicate(seen, fields[sid], line, table.file, problems):
            continue
        archived = fields[status].strip().lower() == "tobedeleted"
        out[fields[sid]] = RosterClass(
            fields[sid], line, dict(zip(header, fields, strict=True)), archived
        )
    return out


def _users(table: Table, rule: UsernameRule, problems: Problems) -> dict[str, str | None]:
    """sourcedId -> username; None for a user who is not a member (disabled, deleted, unusable)."""
    sid, enabled = table.column("sourcedId"), table.column("enabledUser")
    status, column = table.index("status"), table.column(rule.column)
    seen: dict[str, int] = {}
    out: dict[str, str | None] = {}
    for line, fields in table.rows:
        if _duplicate(seen, fields[sid], line, table.file, problems):
            continue
        active = fields[enabled].strip().lower() != "false" and (
            status is None or fields[status].strip().lower() != "tobedeleted"
        )
        name = rule.apply(fields[column])
        if name is None and active:
            problems.warn(table.file, line, f"users with no usable {rule.column}")
        out[fields[sid]] = name if active else None
    return out


def _enroll(
    table: Table,
    classes: dict[str, RosterClass],
    usernames: dict[str, str | None],
    today: dt.date,
    problems: Problems,
) -> None:
    sid, cls, user = (table.column(c) for c in ("sourcedId", "classSourcedId", "userSourcedId"))
    role, status, end = table.column("role"), table.index("status"), table.index("endDate")
    seen: dict[str, int] = {}
    for line, fields in table.rows:
        if _duplicate(seen, fields[sid], line, table.file, problems):
            continue
        if status is not None and fields[status].strip().lower() == "tobedeleted":
            continue
        if end is not None and fields[end].strip():
            ends = _date(fields[end])
            if ends is None:
                problems.error(table.file, line, f"endDate {fields[end]!r} is not a date")
                continue
            if ends < today:
                continue
        target = classes.get(fields[cls])
        if target is None:
            problems.warn(table.file, line, "enrollments for an unknown class")
            continue
        if fields[user] not in usernames:
            problems.warn(table.file, line, "enrollments for an unknown user")
            continue
        name = usernames[fields[user]]
        if name is not None:
            target.members.setdefault(fields[role].strip().lower(), set()).add(name)


def _date(text: str) -> dt.date | None:
    """A OneRoster date (YYYY-MM-DD) or date-time, as a UTC date."""
    text = text.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC).date()
    except ValueError:
        return None
