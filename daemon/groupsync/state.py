"""State snapshots: what a plan reads from the journal, as a versioned JSON document.

A plan made where the journal is not (a pull request's CI) must see the same managed groups as
the daemon, or it plans creates where the daemon plans updates and its checksum never matches.
The snapshot carries exactly what the plan reads from the journal: each managed key with its
group id and last-applied state (the diff compares each field with it to tell drift from a spec
edit, so a fingerprint would not do), what each roster yielded at the last applied run (the
roster safety check), the number of managed groups and the journal's last run id. No token and
no secret: the journal holds none.

The document (`format_version` 1; ARCHITECTURE.md, "State snapshots"):

    {"format": "groupsync-state", "format_version": 1, "groupsync_version": "0.1.0",
     "run_id": 42, "managed_count": 2,
     "groups": [{"key": "chess", "group_id": "g_1",
                 "applied": {"name": ..., "description": ..., "avatar_url": ...,
                             "members": [...] or null, "archived": false} or null}, ...],
     "rosters": [{"name": "sis", "groups": 12, "members": 340}, ...]}

It is serialized as canonical JSON, so the same journal gives the same bytes (an HTTP ETag can
be their hash). A snapshot is untrusted input: `load_snapshot` refuses one over `MAX_BYTES`,
with duplicate JSON keys, a newer `format_version`, an unknown or missing field, a value over
the API's limits, or keys and group ids that are not one-to-one; every error names the source
and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from groupsync import __version__
from groupsync.canonical import canonical_json
from groupsync.desired import MAX_MEMBERS
from groupsync.errors import GroupsyncError
from groupsync.journal import Journal, applied_to_dict
from groupsync.plan import AppliedState, ManagedGroup, RosterCounts

FORMAT = "groupsync-state"
FORMAT_VERSION = 1
MAX_BYTES = 256 * 1024 * 1024  # 100,000 groups with hundreds of members each fit
MAX_GROUPS = 100_000  # the API's limit per account
MAX_ROSTERS = 1_000
MAX_TEXT = 4096  # any one string: keys, ids, names, descriptions, URLs, usernames
_SHOWN_ERRORS = 5


class SnapshotError(GroupsyncError):
    """A state snapshot that cannot be used: the message names its source and the field."""


@dataclass(frozen=True, slots=True)
class State:
    """What a plan reads from the journal, wherever it came from."""

    run_id: int | None  # the journal's newest run; None before the first
    managed: Mapping[str, ManagedGroup]  # key -> group id and last-applied state
    rosters: Mapping[str, RosterCounts]  # each roster at the last applied run

    @property
    def managed_count(self) -> int:
        return len(self.managed)


def read_state(journal: Journal) -> State:
    """The journal's state, read in one transaction so a run writing meanwhile is not half in."""
    with journal.one_read():
        return State(journal.last_run_id(), journal.managed(), journal.last_roster_counts())


def to_snapshot(state: State) -> dict[str, Any]:
    groups = [
        {
            "key": mg.key,
            "group_id": mg.group_id,
            "applied": None if mg.applied is None else applied_to_dict(mg.applied),
        }
        for _, mg in sorted(state.managed.items())
    ]
    rosters = [
        {"name": name, "groups": counts.groups, "members": counts.members}
        for name, counts in sorted(state.rosters.items())
    ]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "groupsync_version": __version__,
        "run_id": state.run_id,
        "managed_count": state.managed_count,
        "groups": groups,
        "rosters": rosters,
    }


def snapshot(journal: Journal) -> dict[str, Any]:
    """The journal's state as a snapshot document (see the module docstring)."""
    return to_snapshot(read_state(journal))


def dumps(document: Mapping[str, Any]) -> bytes:
    """A snapshot as bytes: canonical JSON and a newline, the same bytes for the same state."""
    return (canonical_json(document) + "\n").encode("utf-8")


# --- loading -------------------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
OptionalText = Annotated[str, StringConstraints(max_length=MAX_TEXT)] | None
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Applied(_Strict):
    name: Text
    description: OptionalText
    avatar_url: OptionalText
    members: Annotated[list[Text], Field(max_length=MAX_MEMBERS)] | None
    archived: bool


class _Group(_Strict):
    key: Text
    group_id: Text
    applied: _Applied | None


class _Roster(_Strict):
    name: Text
    groups: Count
    members: Count


class _Snapshot(_Strict):
    format: Literal["groupsync-state"]
    format_version: Literal[1]
    groupsync_version: Text
    run_id: Annotated[int, Field(ge=1)] | None
    managed_count: Count
    groups: Annotated[list[_Group], Field(max_length=MAX_GROUPS)]
    rosters: Annotated[list[_Roster], Field(max_length=MAX_ROSTERS)]


def load_snapshot(data: bytes, source: str, *, max_bytes: int = MAX_BYTES) -> State:
    """Read a snapshot someone else wrote, refusing anything off the format (SnapshotError)."""
    if len(data) > max_bytes:
        raise SnapshotError(
            f"state snapshot {source}: {len(data):,} bytes, over the limit of {max_bytes:,}"
        )
    document = _parse(data, source)
    _check_version(document, source)
    try:
        parsed = _Snapshot.model_validate(document)
    except ValidationError as exc:
        raise SnapshotError(_describe(exc, document, source)) from None
    return _state(parsed, source)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object with a field twice could mean either value: refuse it, as the spec does."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the field {key!r} is written twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(data: bytes, source: str) -> Any:
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"state snapshot {source}: not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise SnapshotError(f"state snapshot {source}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, the hooks above, over-long integers
        raise SnapshotError(f"state snapshot {source}: not valid JSON: {exc}") from None


def _check_version(document: Any, source: str) -> None:
    """Refuse another kind of document, or a newer format, before its fields are judged."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SnapshotError(
            f"state snapshot {source}: not a groupsync state snapshot"
            f' (expected an object with "format": "{FORMAT}")'
        )
    version = document.get("format_version")
    if type(version) is not int or version < 1:
        raise SnapshotError(f"state snapshot {source}: format_version: expected a whole number ≥ 1")
    if version > FORMAT_VERSION:
        raise SnapshotError(
            f"state snapshot {source} has format_version {version}, newer than this groupsync"
            f" ({__version__}) reads (up to {FORMAT_VERSION}): upgrade groupsync where you plan"
        )


def _where(loc: tuple[Any, ...], document: dict[str, Any]) -> str:
    """`groups[3].applied.name (key 'chess')`: the field, and the group a person knows."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    if len(loc) >= 2 and loc[0] == "groups" and isinstance(loc[1], int):
        entry = document["groups"][loc[1]]
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            path += f" (key {entry['key'][:80]!r})"
    return path


def _describe(exc: ValidationError, document: dict[str, Any], source: str) -> str:
    errors = exc.errors()
    lines = []
    for err in errors[:_SHOWN_ERRORS]:
        loc = tuple(p for p in err["loc"] if not isinstance(p, str) or p != "[key]")
        message = err["msg"][0].lower() + err["msg"][1:]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{_where(loc, document)}: {message}")
    more = len(errors) - _SHOWN_ERRORS
    tail = f"; and {more} more" if more > 0 else ""
    return f"state snapshot {source}: " + "; ".join(lines) + tail


def _state(parsed: _Snapshot, source: str) -> State:
    """Keys and group ids one-to-one, as the journal keeps them, and the count that says so.

    The keys are sorted as the journal returns them, so the plan walks them in the same order.
    """
    managed: dict[str, ManagedGroup] = {}
    owners: dict[str, str] = {}
    for i, g in enumerate(parsed.groups):
        if g.key in managed:
            raise SnapshotError(f"state snapshot {source}: groups[{i}]: key {g.key!r} twice")
        if g.group_id in owners:
            raise SnapshotError(
                f"state snapshot {source}: groups[{i}]: group {g.group_id!r} is under key"
                f" {owners[g.group_id]!r} and {g.key!r}"
            )
        owners[g.group_id] = g.key
        managed[g.key] = ManagedGroup(g.key, g.group_id, _applied(g.applied))
    if parsed.managed_count != len(managed):
        raise SnapshotError(
            f"state snapshot {source}: managed_count is {parsed.managed_count}"
            f" but it lists {len(managed)} groups"
        )
    rosters: dict[str, RosterCounts] = {}
    for i, r in enumerate(parsed.rosters):
        if r.name in rosters:
            raise SnapshotError(f"state snapshot {source}: rosters[{i}]: roster {r.name!r} twice")
        rosters[r.name] = RosterCounts(r.groups, r.members)
    return State(parsed.run_id, dict(sorted(managed.items())), rosters)


def _applied(applied: _Applied | None) -> AppliedState | None:
    if applied is None:
        return None
    return AppliedState(
        name=applied.name,
        description=applied.description,
        avatar_url=applied.avatar_url,
        members=None if applied.members is None else frozenset(applied.members),
        archived=applied.archived,
    )
