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

import io
import json
import json.encoder
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from groupsync import __version__
from groupsync.canonical import canonical_json
from groupsync.desired import MAX_MEMBERS
from groupsync.errors import GroupsyncError
from groupsync.gcpause import paused_gc
from groupsync.journal import Journal, applied_to_dict
from groupsync.models import Members
from groupsync.plan import AppliedState, ManagedGroup, RosterCounts
from groupsync.render import StateLine

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
    """What a plan reads from the journal, and where it came from (for the plan's state line)."""

    run_id: int | None  # the journal's newest run; None before the first
    managed: Mapping[str, ManagedGroup]  # key -> group id and last-applied state
    rosters: Mapping[str, RosterCounts]  # each roster at the last applied run
    source: Literal["journal", "snapshot", "none"] = "none"
    location: str | None = None  # the journal's path, the snapshot's file or URL

    @property
    def managed_count(self) -> int:
        return len(self.managed)

    @property
    def line(self) -> StateLine:
        return StateLine(self.source, self.location, self.run_id, self.managed_count)


NO_STATE = State(None, {}, {})
"""No journal and no snapshot: nothing is managed, every key is planned as new."""


def read_state(journal: Journal) -> State:
    """The journal's state, read in one transaction so a run writing meanwhile is not half in.

    The collector is held off: 100,000 managed groups are hundreds of thousands of objects that
    make no cycles, and the full collection they trigger rescans the heap, a loaded spec's
    millions of objects included (half a second of a no-op plan of that account)."""
    with paused_gc(), journal.one_read():
        return State(
            journal.last_run_id(),
            journal.managed(),
            journal.last_roster_counts(),
            "journal",
            str(journal.path),
        )


def to_snapshot(state: State) -> dict[str, Any]:
    """A state as a snapshot document; `snapshot_bytes` is the fast way from a journal."""
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
    document: dict[str, Any] = json.loads(snapshot_bytes(journal))
    return document


def dumps(document: Mapping[str, Any]) -> bytes:
    """A snapshot as bytes: canonical JSON and a newline, the same bytes for the same state."""
    return (canonical_json(document) + "\n").encode("utf-8")


def snapshot_bytes(journal: Journal, *, batch: int = 1000) -> bytes:
    """`dumps(snapshot(journal))`, built from the journal's rows as stored: what `state export`
    writes and the daemon serves at GET /state.

    The `applied` column is already canonical JSON, so each group is spliced in as text rather
    than parsed and written again, a batch of rows at a time: 100,000 groups take 0.1 s of CPU
    and the bytes plus one batch of memory (benchmarks/state_serve.py). The collector is held
    off meanwhile: the batches make no cycles, and its full collections over the daemon's heap
    would hold the GIL, stalling the daemon's event loop, for tens of milliseconds each.
    """
    quote = json.encoder.encode_basestring  # what canonical_json writes a string with
    out = io.BytesIO()
    count = 0
    with paused_gc(), journal.one_read():
        run_id, rosters = journal.last_run_id(), journal.last_roster_counts()
        out.write(_around_groups(State(run_id, {}, rosters), 0)[0])
        for rows in journal.managed_rows(batch):
            text = "".join(
                f',{{"applied":{applied or "null"},"group_id":{quote(gid)},"key":{quote(key)}}}'
                for key, gid, applied in rows
            )
            out.write((text if count else text[1:]).encode())  # no comma before the first
            count += len(rows)
    out.write(_around_groups(State(run_id, {}, rosters), count)[1])
    return out.getvalue()


def _around_groups(state: State, count: int) -> tuple[bytes, bytes]:
    """The document's bytes before and after its groups. Keys are sorted: the top-level
    "groups" comes right after the two fixed "format" fields, before any roster's own "groups",
    so the first match is the one to fill."""
    head = to_snapshot(state) | {"managed_count": count, "groups": 0}
    before, after = canonical_json(head).split('"groups":0', 1)
    return f'{before}"groups":['.encode(), f"]{after}\n".encode()


# --- loading -------------------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Roster(_Strict):
    name: Text
    groups: Count
    members: Count


class _Snapshot(_Strict):
    """The document's shape; each of `groups` is checked by `_groups`, which builds the plan's
    values as it goes: pydantic objects first, then those, would double the cost of a load."""

    format: Literal["groupsync-state"]
    format_version: Literal[1]
    groupsync_version: Text
    run_id: Annotated[int, Field(ge=1)] | None
    managed_count: Count
    groups: Annotated[list[Any], Field(max_length=MAX_GROUPS)]
    rosters: Annotated[list[_Roster], Field(max_length=MAX_ROSTERS)]


def load_snapshot(data: bytes, source: str, *, max_bytes: int = MAX_BYTES) -> State:
    """Read a snapshot someone else wrote, refusing anything off the format (SnapshotError)."""
    if len(data) > max_bytes:
        raise SnapshotError(
            f"state snapshot {source}: {len(data):,} bytes, over the limit of {max_bytes:,}"
        )
    with paused_gc():  # tens of thousands of values, no cycles (see groupsync.gcpause)
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
        path += _key_note(document["groups"][loc[1]])
    return path


def _key_note(entry: Any) -> str:
    key = entry.get("key") if isinstance(entry, dict) else None
    return f" (key {key[:80]!r})" if isinstance(key, str) else ""


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
    """The plan's values, with the count checked and rosters named once."""
    managed = _groups(parsed.groups, source)
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
    return State(parsed.run_id, managed, rosters, "snapshot", source)


class _Bad(Exception):
    """One field of one group is off: where (below `groups[i]`) and what."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem


_GROUP_FIELDS = frozenset({"key", "group_id", "applied"})
_APPLIED_FIELDS = frozenset({"name", "description", "avatar_url", "members", "archived"})
_TEXT = f"a string of 1 to {MAX_TEXT} characters"


def _groups(groups: list[Any], source: str) -> dict[str, ManagedGroup]:
    """Each group checked as strictly as pydantic would, keys and group ids one to one, as the
    journal keeps them; sorted by key as the journal returns them, so the plan walks them in
    the same order."""
    managed: dict[str, ManagedGroup] = {}
    owners: dict[str, str] = {}
    for i, entry in enumerate(groups):
        try:
            group = _group(entry)
        except _Bad as bad:
            raise SnapshotError(
                f"state snapshot {source}: groups[{i}]{bad.field}{_key_note(entry)}: {bad.problem}"
            ) from None
        if group.key in managed:
            raise SnapshotError(f"state snapshot {source}: groups[{i}]: key {group.key!r} twice")
        if group.group_id in owners:
            raise SnapshotError(
                f"state snapshot {source}: groups[{i}]: group {group.group_id!r} is under key"
                f" {owners[group.group_id]!r} and {group.key!r}"
            )
        owners[group.group_id] = group.key
        managed[group.key] = group
    return dict(sorted(managed.items()))


def _group(entry: Any) -> ManagedGroup:
    _fields(entry, _GROUP_FIELDS, "")
    key, group_id, applied = entry["key"], entry["group_id"], entry["applied"]
    _text(key, ".key")
    _text(group_id, ".group_id")
    if applied is None:
        return ManagedGroup(key, group_id, None)
    _fields(applied, _APPLIED_FIELDS, ".applied")
    name, members, archived = applied["name"], applied["members"], applied["archived"]
    _text(name, ".applied.name")
    for field in ("description", "avatar_url"):
        if applied[field] is not None:
            _text(applied[field], f".applied.{field}", empty=True)
    if members is not None:
        _members(members)
    if type(archived) is not bool:
        raise _Bad(".applied.archived", "expected true or false")
    state = AppliedState(
        name,
        applied["description"],
        applied["avatar_url"],
        None if members is None else Members(members),
        archived,
    )
    return ManagedGroup(key, group_id, state)


def _members(members: Any) -> None:
    if type(members) is not list or len(members) > MAX_MEMBERS:
        raise _Bad(".applied.members", f"expected null or a list of at most {MAX_MEMBERS}")
    try:  # a list of 1,000 usernames is checked at C speed; only a bad one is looked for
        "".join(members)
        good = not members or (min(map(len, members)) > 0 and max(map(len, members)) <= MAX_TEXT)
    except TypeError:
        good = False
    if not good:
        for j, member in enumerate(members):
            _text(member, f".applied.members[{j}]")


def _fields(value: Any, expected: frozenset[str], where: str) -> None:
    if type(value) is not dict:
        raise _Bad(where, "expected an object" + (" or null" if where else ""))
    if value.keys() != expected:
        missing, unknown = sorted(expected - value.keys()), sorted(value.keys() - expected)
        problem = f"missing {', '.join(missing)}" if missing else ""
        problem += "; " if missing and unknown else ""
        problem += f"unknown field {', '.join(unknown)}" if unknown else ""
        raise _Bad(where, problem)


def _text(value: Any, where: str, *, empty: bool = False) -> None:
    if type(value) is not str or not (empty or value) or len(value) > MAX_TEXT:
        raise _Bad(where, f"expected {'null or ' if empty else ''}{_TEXT}")
