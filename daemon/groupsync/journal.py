"""The SQLite journal: runs, every change before and after its API call, and the managed groups.

It is the only memory groupsync has: which group each key owns (without it nothing is managed)
and what it last made each group look like (without it drift cannot be told from spec). So it is
written in WAL mode and a change row is written `pending` before its API call, which makes a
crash leave a truthful record that `apply.recover_pending` can settle. A change that sends
nothing is never `pending`: an adoption of a group that already looks right is written `applied`
with its mapping (`adopt_unsent`, many to a transaction), a change a stopped run never started
`skipped` (`skip_changes`); with no request, there is no remote effect to be uncertain about.

Two layers, each doing what it does best. sqlite-utils' `Database` wraps the connection: the
journal reads with `db.query` (rows as dicts, which the typed records are built from), writes
plain SQL with `db.execute`, and the migrations introspect the schema with it. Transactions are
the journal's own: the connection is in autocommit mode and every write is one BEGIN IMMEDIATE
... COMMIT issued on it here, so each write commits exactly where the journal says. sqlite-utils'
writing helpers (insert, upsert, update...) stay unused: some versions wrap them in `with conn:`,
which would commit the open transaction half way; `db.execute` joins it instead.

Durability: synchronous=NORMAL, except the commit of a create's `pending` row, which is FULL.
In WAL mode NORMAL loses nothing when the process dies (SIGKILL, OOM): only an OS crash or power
loss can roll back the last commits, and then the next plan still re-reads the API and adopts
by name, so no group is duplicated and no wrong write follows; only the record of those last
moments goes. The one row worth an fsync is a create's `pending` row, so recovery can adopt
what that POST made by itself (its FULL commit syncs the WAL, and with it every commit before).
An fsync per commit would block the event loop for every change in flight (the measurement is
in benchmarks/RESULTS.md).

Plain SQLite, readable by `sqlite3`, sqlite-utils and Datasette as it is: timestamps are ISO-8601
UTC text (`2026-11-27T01:53:47.123Z`, sortable as text), structured values are JSON text.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from groupsync import private
from groupsync.canonical import canonical_json
from groupsync.errors import GroupsyncError
from groupsync.journal_errors import JournalError, advice, journal_error
from groupsync.journal_schema import SCHEMA_VERSION, check_identity, migrate
from groupsync.models import Members
from groupsync.outcomes import ChangeStatus, MessageStatus, RunOutcome
from groupsync.plan import Action, AppliedState, Cause, Change, ManagedGroup, RosterCounts
from groupsync.render import show_members, show_value
from groupsync.secret import redact_secrets

__all__ = [
    "SCHEMA_VERSION",
    "ChangeRecord",
    "Journal",
    "JournalError",
    "JournalLocked",
    "MessageRecord",
    "RunRecord",
    "applied_to_dict",
    "now_iso",
]

T = TypeVar("T")


class JournalLocked(GroupsyncError):
    """Another process is applying with this journal: racing it would write twice."""


class JournalReplaced(JournalError):
    """The journal or its lock file was deleted or replaced under this process.

    Writing on would record changes in a file nobody reads, while the fresh lock lets a second
    writer start on the new file: two writers planning the same new key create two groups.
    """


def now_iso() -> str:
    """One timestamp format everywhere: UTC, milliseconds, `Z`; sorts correctly as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _json(value: Any) -> str:
    return canonical_json(value)


def _masked(text: str | None) -> str | None:
    """Free text from errors, with every secret the process holds masked: the API client redacts
    what servers send, and this catches whatever else an error may have picked up."""
    return None if text is None else redact_secrets(text)


def applied_to_dict(applied: AppliedState) -> dict[str, Any]:
    """The JSON form of an AppliedState: the `groups.applied` column and the state snapshot."""
    return {
        "name": applied.name,
        "description": applied.description,
        "avatar_url": applied.avatar_url,
        "members": None if applied.members is None else sorted(applied.members),
        "archived": applied.archived,
    }


def _applied_to_json(applied: AppliedState) -> str:
    return _json(applied_to_dict(applied))


def _applied_from_json(text: str | None) -> AppliedState | None:
    if text is None:
        return None
    data = json.loads(text)
    members = data.get("members")
    return AppliedState(
        name=data["name"],
        description=data.get("description"),
        avatar_url=data.get("avatar_url"),
        members=None if members is None else Members(map(sys.intern, members)),
        archived=bool(data.get("archived")),
    )


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One journaled change, as `history` shows it and recovery settles it."""

    id: int
    run_id: int
    key: str
    group_id: str | None
    name: str
    action: Action
    cause: Cause
    diff: Mapping[str, Mapping[str, Any]]  # field -> {"before", "after", "cause"}
    members_added: tuple[str, ...]
    members_removed: tuple[str, ...]
    members_cause: Cause | None
    set_archived: bool | None
    status: ChangeStatus
    attempts: int
    http_status: int | None
    error: str | None
    note: str | None
    started_at: str
    finished_at: str | None
    duration_ms: int | None

    @property
    def summary(self) -> str:
        return _summary(_columns(self))

    def to_json(self) -> dict[str, Any]:
        """The `history --json` form: every column by name, and the one-line summary."""
        columns = _columns(self)
        return columns | {"summary": _summary(columns)}


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message of the outbox, as `history` shows it."""

    id: int
    run_id: int
    key: str
    kind: str
    conversation_id: str | None
    text: str
    status: MessageStatus
    message_id: str | None
    attempts: int
    http_status: int | None
    error: str | None
    started_at: str
    finished_at: str | None

    @property
    def summary(self) -> str:
        """`✉ welcome cs101: sent (message m-12)`."""
        line = f"✉ {self.kind} {self.key}: {self.status}"
        detail = f"message {self.message_id}" if self.message_id else self.error
        return line + (f" ({detail})" if detail else "")

    def to_json(self) -> dict[str, Any]:
        columns = _columns(self)
        return columns | {"summary": self.summary}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run and its changes; `outcome` None: not finished (running, or its process died)."""

    id: int
    started_at: str
    finished_at: str | None
    trigger: str
    mode: str
    spec_digest: str | None
    spec_commit: str | None
    spec_dirty: bool | None
    plan_checksum: str | None
    outcome: RunOutcome | None
    counts: Mapping[str, int]
    error: str | None
    rosters: tuple[Mapping[str, Any], ...]  # each roster as read for the run (RosterSummary)
    changes: tuple[ChangeRecord, ...]
    messages: tuple[MessageRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The `history --json` form: every column by name, the changes and the messages."""
        return _columns(self) | {
            "changes": [c.to_json() for c in self.changes],
            "messages": [m.to_json() for m in self.messages],
        }


def _columns(record: ChangeRecord | RunRecord | MessageRecord) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _optional(convert: Any, value: Any) -> Any:
    return None if value is None else convert(value)


def _record(cls: type[T], row: Mapping[str, Any], **converted: Any) -> T:
    """`cls` from a row: each field its column's value, unless given converted."""
    names = [f.name for f in fields(cls) if f.name not in converted]
    return cls(**{name: row[name] for name in names}, **converted)


def _change_record(row: Mapping[str, Any]) -> ChangeRecord:
    return _record(
        ChangeRecord,
        row,
        action=Action(row["action"]),
        cause=Cause(row["cause"]),
        diff=json.loads(row["diff"]),
        members_added=tuple(json.loads(row["members_added"])),
        members_removed=tuple(json.loads(row["members_removed"])),
        members_cause=_optional(Cause, row["members_cause"]),
        set_archived=_optional(bool, row["set_archived"]),
        status=ChangeStatus(row["status"]),
    )


def _message_record(row: Mapping[str, Any]) -> MessageRecord:
    return _record(MessageRecord, row, status=MessageStatus(row["status"]))


def _run_record(
    row: Mapping[str, Any], changes: list[ChangeRecord], messages: list[MessageRecord]
) -> RunRecord:
    return _record(
        RunRecord,
        row,
        messages=tuple(messages),
        spec_dirty=_optional(bool, row["spec_dirty"]),
        outcome=_optional(RunOutcome, row["outcome"]),
        counts=json.loads(row["counts"]) if row["counts"] else {},
        rosters=tuple(json.loads(row["rosters"])) if row["rosters"] else (),
        changes=tuple(changes),
    )


# --- the file ------------------------------------------------------------------------------------


def _why_read_only(path: Path) -> str | None:
    """Why the journal may only be read, or None if groupsync may write it.

    The mode is honoured as its owner would see it even by root, who could write anyway: a
    journal made read-only (chmod a-w), or kept in a read-only folder, is never written by a root
    daemon either. os.access adds what modes do not show: a read-only mount, a foreign owner.
    """
    for target in (path, path.parent):
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            continue
        if not (mode & stat.S_IWUSR and os.access(target, os.W_OK)):
            return f"{target} is read-only (mode {stat.S_IMODE(mode):04o})"
    return None


def _prepare(db: Database, path: Path, read_only: str | None) -> None:
    """Check the file is a sound groupsync journal, then set it up for writing and migrate it."""
    conn = db.conn
    problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if problem != "ok":  # e.g. "*** in database main ***\nPage 8: btreeInitPage() returns ..."
        detail = " ".join(line for line in problem.splitlines() if not line.startswith("***"))
        raise JournalError(
            f"journal {path}: a check found damage: {detail};"
            f" {advice(path, sqlite3.SQLITE_CORRUPT)}"
        )
    conn.execute("BEGIN")  # one snapshot: another process may be migrating right now
    try:
        version = check_identity(db, path)
    finally:
        conn.execute("COMMIT")
    if read_only is not None:
        if version < SCHEMA_VERSION:
            raise JournalError(
                f"journal {path}: schema v{version} must be upgraded to v{SCHEMA_VERSION},"
                f" but {read_only}; make it writable once"
            )
        return
    _use_wal(conn, path)
    # synchronous resets on every connection: set it each time (see the module docstring).
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(db, path)


_OPEN_WAIT_S = 10.0  # as sqlite3.connect's timeout: how long an open waits out other openers


def _use_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch the file to WAL, waiting out other connections opening the same new file: the
    switch takes an exclusive lock, and SQLite may answer SQLITE_BUSY at once, without its busy
    timeout (about 1 in 75 tries with six threads opening a new journal together)."""
    deadline = time.monotonic() + _OPEN_WAIT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        else:
            if str(mode).lower() == "wal":
                return
            if time.monotonic() > deadline:
                raise JournalError(f"journal {path}: cannot switch it to WAL (it stays {mode})")
        time.sleep(0.01)


class Journal:
    """One journal file. Safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: Path, db: Database, read_only: str | None) -> None:
        self.path = path
        self._db = db  # every statement but transaction control
        self._conn = db.conn  # BEGIN IMMEDIATE, COMMIT, ROLLBACK and per-commit PRAGMAs
        self._lock = threading.RLock()
        self._opened = _file_identity(path)  # what ensure_still_held compares the path with
        self._lock_fd: int | None = None  # the writer lock's file, while it is held
        self.read_only = read_only  # why it may only be read, or None

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, read_only: str | None = None) -> Journal:
        """Open or create the journal, migrating an older schema; refuse a newer or foreign file.

        A read-only file (see `_why_read_only`), or any file when `read_only` says why, is opened
        read-only: `plan` and `history` work, every write is refused with the reason. A damaged
        file is refused before anything is written to it: quick_check reads every page (0.25 s
        for 100,000 changes, 20 MB).
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise JournalError(f"journal {path}: directory {path.parent} does not exist")
        read_only = read_only or _why_read_only(path)
        if read_only is not None and not path.exists():
            raise JournalError(f"journal {path}: cannot create it: {read_only}")
        if read_only is None:
            try:
                private.prepare_sqlite(path)
            except OSError as exc:
                raise JournalError(
                    f"journal {path}: cannot create it ({exc.strerror});"
                    f" {advice(path, sqlite3.SQLITE_CANTOPEN)}"
                ) from None
        target = f"{path.absolute().as_uri()}?mode={'ro' if read_only else 'rw'}"
        try:
            # isolation_level=None: sqlite3 opens no transaction by itself; the journal does.
            # check_same_thread=False: the lock in Journal serialises use, so a daemon may touch
            # it from a health-check thread; timeout: wait out a Datasette reader's brief locks.
            conn = sqlite3.connect(
                target, uri=True, timeout=10, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise journal_error(path, "cannot open it", exc) from None
        try:
            db = Database(conn)
            _prepare(db, path, read_only)
        except sqlite3.Error as exc:
            conn.close()
            raise journal_error(path, "cannot open it", exc) from None
        except BaseException:
            conn.close()
            raise
        return cls(path, db, read_only)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transactions ------------------------------------------------------------------------

    @contextmanager
    def _writing(self, doing: str, *, synchronous: str | None = None) -> Iterator[Database]:
        """One write transaction, committed here; any failure is a JournalError saying `doing`.

        BEGIN IMMEDIATE takes the write lock up front, so a reader never makes a write fail half
        way. `synchronous` (FULL) applies to this commit only.
        """
        with self._lock:
            self._refuse_if_read_only(doing)
            conn = self._conn
            try:
                if synchronous is not None:
                    conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute("BEGIN IMMEDIATE")
                yield self._db
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise journal_error(self.path, doing, exc) from None
            finally:
                if conn.in_transaction:  # the block raised, or COMMIT failed
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if synchronous is not None:
                    conn.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        """Reads under the lock; consume `db.query` inside (it may run the SQL only then)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise journal_error(self.path, "cannot read it", exc) from None

    @contextmanager
    def one_read(self) -> Iterator[None]:
        """Several reads as one: no write, of this process or another, lands between them."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise journal_error(self.path, "cannot read it", exc) from None
            try:
                yield
            finally:
                self._conn.execute("COMMIT")  # ends the read transaction; nothing was written

    def _refuse_if_read_only(self, doing: str) -> None:
        if self.read_only is not None:
            raise JournalError(
                f"journal {self.path}: {doing}: {self.read_only};"
                f" {advice(self.path, sqlite3.SQLITE_READONLY)}"
            )

    # --- one writer --------------------------------------------------------------------------

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold `<journal>.lock` exclusively while applying; a second writer fails at once.

        flock, not a pid file: the kernel drops it when the holder dies (even by SIGKILL), so a
        crash never leaves a stale lock behind. The pid written inside is only for the message.
        """
        self._refuse_if_read_only("cannot apply or run with it")
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise JournalLocked(
                    f"another groupsync apply/run holds {self.path} (pid {holder})"
                ) from None
            self._lock_fd = fd
            try:
                # The lock file or the journal may have been replaced since they were opened:
                # a lock on a deleted file keeps nobody out.
                self.ensure_still_held()
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                yield
            finally:
                self._lock_fd = None
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def ensure_still_held(self) -> None:
        """Raise JournalReplaced unless the journal's path, and its lock's while the lock is held,
        still name the very files this process has open (same device and inode).

        A writer calls it before each run and each write phase: a journal folder deleted and
        recreated under it must stop it before its next write, not after.
        """
        gone = []
        if self._opened is None or _file_identity(self.path) != self._opened:
            gone.append(f"{self.path} is no longer the file this process opened")
        if self._lock_fd is not None:
            held = os.fstat(self._lock_fd)
            if _file_identity(self._lock_path) != (held.st_dev, held.st_ino):
                gone.append(f"{self._lock_path} is no longer the lock this process holds")
        if gone:
            raise JournalReplaced(
                f"journal {self.path} was deleted or replaced under this process: "
                + "; ".join(gone)
            )

    # --- runs --------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        trigger: str,
        mode: str,
        spec_digest: str,
        spec_commit: str | None = None,
        spec_dirty: bool | None = None,
        rosters: list[dict[str, Any]] | None = None,
    ) -> int:
        """`rosters`: each roster as read for this run (RosterSummary.to_json), if any."""
        with self._writing("cannot start a run (nothing was applied)") as db:
            cursor = db.execute(
                "INSERT INTO runs (started_at, trigger, mode, spec_digest, spec_commit, spec_dirty,"
                " rosters) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now_iso(),
                    trigger,
                    mode,
                    spec_digest,
                    spec_commit,
                    spec_dirty,
                    _json(rosters) if rosters else None,
                ),
            )
        return int(cursor.lastrowid)  # type: ignore[arg-type]

    def finish_run(
        self,
        run_id: int,
        *,
        outcome: RunOutcome,
        counts: dict[str, int],
        error: str | None = None,
        plan_checksum: str | None = None,
    ) -> None:
        with self._writing(f"run {run_id} ended ({outcome}) but could not be recorded") as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, error = ?,"
                " plan_checksum = coalesce(?, plan_checksum) WHERE id = ?",
                (
                    now_iso(),
                    RunOutcome(outcome),
                    _json(counts),
                    _masked(error),
                    plan_checksum,
                    run_id,
                ),
            )

    def last_run_id(self) -> int | None:
        """The newest run's id, finished or not; None before the first run."""
        with self._reading() as db:
            [row] = list(db.query("SELECT max(id) AS id FROM runs"))
        return row["id"]

    def last_roster_counts(self) -> dict[str, RosterCounts]:
        """What each roster yielded at the last run that applied its plan (or had nothing to).

        Per roster: one added since is compared with nothing until a run applies it.
        """
        with self._reading() as db:
            rows = list(
                db.query(
                    "SELECT rosters FROM runs WHERE rosters IS NOT NULL"
                    " AND outcome IN (?, ?) ORDER BY id DESC",
                    [RunOutcome.APPLIED, RunOutcome.NOOP],
                )
            )
        out: dict[str, RosterCounts] = {}
        for row in rows:
            for roster in json.loads(row["rosters"]):
                out.setdefault(roster["name"], RosterCounts(roster["groups"], roster["members"]))
        return out

    # --- changes -----------------------------------------------------------------------------

    def begin_change(self, run_id: int, change: Change) -> int:
        """Record the change as `pending` before its API call is sent (a create's, with fsync)."""
        with self._writing(
            f"cannot record {change.action} {change.key} before sending it (not sent)",
            synchronous="FULL" if change.action is Action.CREATE else None,
        ) as db:
            return _insert_change(db, run_id, change, ChangeStatus.PENDING, now_iso())

    def adopt_unsent(
        self, run_id: int, adoptions: Sequence[tuple[Change, AppliedState]]
    ) -> list[str | None]:
        """Record adoptions that send nothing to the API, all in one transaction: each change
        row and its group's mapping. No row is `pending` first: with no request there is no
        remote effect to be uncertain about, so a crash loses the whole batch or none of it.

        An adoption whose group another key already manages fails alone (its failed statement
        rolls back by itself): returned is its error, else None, in the order given.
        """
        now = now_iso()
        errors: list[str | None] = []
        with self._writing("cannot record a batch of adoptions (none of it recorded)") as db:
            for change, applied in adoptions:
                assert change.group_id is not None, "an adoption names its group"
                try:
                    _upsert_managed(db, change.key, change.group_id, applied, now)
                except GroupsyncError as exc:
                    errors.append(str(exc))
                    _insert_change(db, run_id, change, ChangeStatus.FAILED, now, error=str(exc))
                else:
                    errors.append(None)
                    _insert_change(db, run_id, change, ChangeStatus.APPLIED, now)
        return errors

    def skip_changes(self, run_id: int, changes: Sequence[Change], note: str) -> None:
        """Record changes a stopped run never started as `skipped`, `note` saying why, in one
        transaction: nothing was sent, so nothing is `pending` first."""
        now = now_iso()
        with self._writing("cannot record the changes a stopped run did not start") as db:
            for change in changes:
                _insert_change(db, run_id, change, ChangeStatus.SKIPPED, now, note=note)

    def settle_change(
        self,
        change_id: int,
        *,
        status: ChangeStatus,
        group_id: str | None = None,
        attempts: int = 0,
        http_status: int | None = None,
        error: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record how a change ended; `note` is appended to the plan's note, not replacing it."""
        if status == ChangeStatus.PENDING:
            raise ValueError("a change settles into a final status, not pending")
        with self._writing(f"cannot record that change {change_id} ended {status}") as db:
            cursor = db.execute(
                "UPDATE changes SET status = :status, group_id = coalesce(:group_id, group_id),"
                " attempts = :attempts, http_status = :http_status, error = :error,"
                " finished_at = :finished, duration_ms = max(0, CAST(round("
                "(julianday(:finished) - julianday(started_at)) * 86400000) AS INTEGER)),"
                " note = CASE WHEN :note IS NULL THEN note WHEN note IS NULL THEN :note"
                " ELSE note || '; ' || :note END WHERE id = :id",
                {
                    "status": status,
                    "group_id": group_id,
                    "attempts": attempts,
                    "http_status": http_status,
                    "error": _masked(error),
                    "finished": now_iso(),
                    "note": _masked(note),
                    "id": change_id,
                },
            )
            if cursor.rowcount != 1:
                raise ValueError(f"no change {change_id} in {self.path}")

    def pending_changes(self) -> list[ChangeRecord]:
        """Changes a crashed run left unsettled, oldest first."""
        with self._reading() as db:
            rows = db.query("SELECT * FROM changes WHERE status = 'pending' ORDER BY id")
            return [_change_record(r) for r in rows]

    # --- managed groups ----------------------------------------------------------------------

    def managed(self) -> dict[str, ManagedGroup]:
        """Built row by row, never holding the rows themselves: an account may have 100,000.
        Each `applied` stays JSON until asked for (see ManagedGroup)."""
        with self._reading() as db:
            rows = db.execute("SELECT key, group_id, applied FROM groups ORDER BY key")
            return {
                key: ManagedGroup(key, group_id, applied, read=_applied_from_json)
                for key, group_id, applied in rows
            }

    def managed_count(self) -> int:
        with self._reading() as db:
            return int(db.execute("SELECT count(*) FROM groups").fetchone()[0])

    def managed_rows(self, size: int = 1000) -> Iterator[list[tuple[str, str, str | None]]]:
        """(key, group id, `applied` as stored) of every managed group in key order, `size` at a
        time: a reader that streams them out holds one batch, not all. `applied` is the canonical
        JSON of `applied_to_dict`, as every version of the journal has written it. Consume it
        inside `one_read` for a consistent view."""
        with self._reading() as db:
            cursor = db.execute("SELECT key, group_id, applied FROM groups ORDER BY key")
            while rows := cursor.fetchmany(size):
                yield rows

    def managed_group(self, key: str) -> tuple[ManagedGroup, str] | None:
        """One managed group and when groupsync took it over; None if `key` is not managed."""
        with self._reading() as db:
            rows = list(
                db.query("SELECT group_id, applied, managed_since FROM groups WHERE key = ?", [key])
            )
        if not rows:
            return None
        row = rows[0]
        managed = ManagedGroup(key, row["group_id"], _applied_from_json(row["applied"]))
        return managed, row["managed_since"]

    def set_managed(self, key: str, group_id: str, applied: AppliedState) -> None:
        """Map key -> group (keeping `managed_since`) and remember the state groupsync gave it."""
        with self._writing(f"cannot record that key {key} is group {group_id}") as db:
            _upsert_managed(db, key, group_id, applied, now_iso())

    def forget(self, key: str) -> None:
        with self._writing(f"cannot forget key {key}") as db:
            db.execute("DELETE FROM groups WHERE key = ?", [key])

    # --- the outbox ----------------------------------------------------------------------------

    def begin_message(
        self,
        run_id: int,
        key: str,
        kind: str,
        text: str,
        *,
        conversation_id: str | None,
        status: MessageStatus = MessageStatus.PENDING,
        error: str | None = None,
        problems: str | None = None,
    ) -> int | None:
        """Record a message before it is posted (fsync'd: at most once must survive a power
        loss too); None when the run already has this (key, kind), which is never posted again.
        `status` skipped records a message that is not posted, with `error` saying why."""
        with self._writing(
            f"cannot record the {kind} message for {key} before posting it (not posted)",
            synchronous="FULL" if status is MessageStatus.PENDING else None,
        ) as db:
            cursor = db.execute(
                "INSERT INTO messages (run_id, key, kind, conversation_id, text, status, error,"
                " problems, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, key, kind) DO NOTHING",
                (
                    run_id,
                    key,
                    kind,
                    conversation_id,
                    _masked(text),
                    status,
                    _masked(error),
                    problems,
                    now_iso(),
                    None if status is MessageStatus.PENDING else now_iso(),
                ),
            )
        return int(cursor.lastrowid) if cursor.rowcount == 1 else None  # type: ignore[arg-type]

    def settle_message(
        self,
        message_row: int,
        *,
        status: MessageStatus,
        message_id: str | None = None,
        attempts: int = 0,
        http_status: int | None = None,
        error: str | None = None,
    ) -> None:
        with self._writing(f"cannot record that message {message_row} ended {status}") as db:
            db.execute(
                "UPDATE messages SET status = ?, message_id = ?, attempts = ?, http_status = ?,"
                " error = ?, finished_at = ? WHERE id = ?",
                (
                    status,
                    message_id,
                    attempts,
                    http_status,
                    _masked(error),
                    now_iso(),
                    message_row,
                ),
            )

    def recover_messages(self) -> int:
        """Settle the messages a crashed run left `pending` as `unknown`: their POST may have
        gone out, and the API cannot list messages to tell, so they are never sent again."""
        with self._writing("cannot settle the messages a crashed run left") as db:
            cursor = db.execute(
                "UPDATE messages SET status = 'unknown', finished_at = ?,"
                " error = 'the run ended while posting it; never sent again'"
                " WHERE status = 'pending'",
                [now_iso()],
            )
        return int(cursor.rowcount)

    def archive_announced(self, key: str) -> bool:
        """True when an archive notice for `key` was posted (or maybe posted) and no archive of
        it applied since: the notice of an archive that never happened is not posted again."""
        with self._reading() as db:
            last = list(
                db.query(
                    "SELECT run_id FROM messages WHERE key = ? AND kind = 'on_archive'"
                    " AND status IN ('sent', 'unknown') ORDER BY id DESC LIMIT 1",
                    [key],
                )
            )
            if not last:
                return False
            done = list(
                db.query(
                    "SELECT 1 FROM changes WHERE key = ? AND set_archived = 1"
                    " AND status = 'applied' AND run_id >= ? LIMIT 1",
                    [key, last[0]["run_id"]],
                )
            )
        return not done

    def open_problems(self, key: str) -> str | None:
        """The problems the last admin summary to `key` reported, unless posted since as
        resolved: a refusal that repeats unchanged is posted once."""
        with self._reading() as db:
            rows = list(
                db.query(
                    "SELECT kind, problems FROM messages WHERE key = ?"
                    " AND ((kind = 'summary' AND problems IS NOT NULL) OR kind = 'resolved')"
                    " AND status IN ('pending', 'sent', 'unknown') ORDER BY id DESC LIMIT 1",
                    [key],
                )
            )
        return rows[0]["problems"] if rows and rows[0]["kind"] == "summary" else None

    def managed_by_group_id(self, group_id: str) -> ManagedGroup | None:
        """The key holding `group_id` and what groupsync last applied to it; None: unmanaged."""
        with self._reading() as db:
            rows = list(db.query("SELECT key, applied FROM groups WHERE group_id = ?", [group_id]))
        if not rows:
            return None
        return ManagedGroup(rows[0]["key"], group_id, _applied_from_json(rows[0]["applied"]))

    # --- webhook events ----------------------------------------------------------------------

    def record_event(self, event_id: str, event_type: str) -> bool:
        """Remember a webhook event's id; False when it was received before (a repeat)."""
        with self._writing(f"cannot record webhook event {event_id}") as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO webhook_events (id, type, received_at) VALUES (?, ?, ?)",
                (event_id, event_type, now_iso()),
            )
        return cursor.rowcount == 1

    def unrecord_event(self, event_id: str) -> None:
        """Forget an event that could not be taken in, so its redelivery is not a repeat."""
        with self._writing(f"cannot forget webhook event {event_id}") as db:
            db.execute("DELETE FROM webhook_events WHERE id = ?", [event_id])

    def prune_events(self, before: str) -> int:
        """Forget event ids received before `before` (ISO-8601 UTC); how many went."""
        with self._writing("cannot prune old webhook event ids") as db:
            cursor = db.execute("DELETE FROM webhook_events WHERE received_at < ?", [before])
        return cursor.rowcount

    # --- history -----------------------------------------------------------------------------

    def runs(
        self, *, limit: int = 20, outcome: RunOutcome | None = None, trigger: str | None = None
    ) -> list[RunRecord]:
        """The last `limit` runs (only those that ended in `outcome`, or started by `trigger`, if
        given), newest first, without their changes: a page of runs reads 20 rows, however many
        changes each made."""
        conditions = [("outcome = ?", outcome), ("trigger = ?", trigger)]
        wanted = [(sql, str(value)) for sql, value in conditions if value is not None]
        where = "WHERE " + " AND ".join(sql for sql, _ in wanted) if wanted else ""
        params = [value for _, value in wanted]
        with self._reading() as db:
            rows = list(
                db.query(f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ?", [*params, limit])
            )
        return [_run_record(r, [], []) for r in rows]

    def recent_changes(self, limit: int = 50) -> list[ChangeRecord]:
        """The last `limit` changes of any run, newest first."""
        with self._reading() as db:
            rows = db.query("SELECT * FROM changes ORDER BY id DESC LIMIT ?", [limit])
            return [_change_record(r) for r in rows]

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the file (SQLite's
        `PRAGMA data_version`): a reader knows when what it built from the journal is stale."""
        with self._reading() as db:
            return int(db.execute("PRAGMA data_version").fetchone()[0])

    def history(self, *, limit: int = 20, key: str | None = None) -> list[RunRecord]:
        """The last `limit` runs, newest first, each with its changes (only `key`'s if given)."""
        with self._reading() as db:
            if key is None:
                runs = list(db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))
            else:
                runs = list(
                    db.query(
                        "SELECT * FROM runs WHERE id IN"
                        " (SELECT run_id FROM changes WHERE key = ?) ORDER BY id DESC LIMIT ?",
                        [key, limit],
                    )
                )
            ids = [r["id"] for r in runs]
            by_run: dict[int, list[ChangeRecord]] = {i: [] for i in ids}
            sent: dict[int, list[MessageRecord]] = {i: [] for i in ids}
            if ids:
                marks = ",".join("?" * len(ids))
                where = f"run_id IN ({marks})" + (" AND key = ?" if key is not None else "")
                params = [*ids, key] if key is not None else ids
                for row in db.query(f"SELECT * FROM changes WHERE {where} ORDER BY id", params):
                    by_run[row["run_id"]].append(_change_record(row))
                for row in db.query(f"SELECT * FROM messages WHERE {where} ORDER BY id", params):
                    sent[row["run_id"]].append(_message_record(row))
        return [_run_record(r, by_run[r["id"]], sent[r["id"]]) for r in runs]


def _insert_change(
    db: Database,
    run_id: int,
    change: Change,
    status: ChangeStatus,
    at: str,
    *,
    error: str | None = None,
    note: str | None = None,
) -> int:
    """One `changes` row; its id. A `pending` row started `at` and is settled later
    (`settle_change`); any other status is final, started and finished `at`. `note` is appended
    to the plan's note, as `settle_change` appends it."""
    diff = {
        f.field: {"before": f.old, "after": f.new, "cause": str(f.cause)} for f in change.fields
    }
    final = status is not ChangeStatus.PENDING
    cursor = db.execute(
        "INSERT INTO changes (run_id, key, group_id, name, action, cause, diff, members_added,"
        " members_removed, members_cause, set_archived, status, error, started_at, finished_at,"
        " duration_ms, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            change.key,
            change.group_id,
            change.name,
            str(change.action),
            str(change.cause),
            _json(diff),
            _json(list(change.members_add)),
            _json(list(change.members_remove)),
            None if change.members_cause is None else str(change.members_cause),
            change.set_archived,
            str(status),
            _masked(error),
            at,
            at if final else None,
            0 if final else None,
            "; ".join(n for n in (change.note, _masked(note)) if n) or None,
        ),
    )
    return int(cursor.lastrowid)  # type: ignore[arg-type]


def _upsert_managed(db: Database, key: str, group_id: str, applied: AppliedState, at: str) -> None:
    """Map key -> group as of `at`, keeping `managed_since`. A group another key manages
    (`groups_by_group_id`) raises GroupsyncError; SQLite rolls back only the failed statement,
    so the transaction around it goes on."""
    try:
        db.execute(
            "INSERT INTO groups (key, group_id, name, managed_since, updated_at, applied)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
            " group_id = excluded.group_id, name = excluded.name,"
            " updated_at = excluded.updated_at, applied = excluded.applied",
            (key, group_id, applied.name, at, at, _applied_to_json(applied)),
        )
    except sqlite3.IntegrityError:
        [owner] = db.query("SELECT key FROM groups WHERE group_id = ?", [group_id])
        raise GroupsyncError(
            f"group {group_id} is already managed under key {owner['key']!r};"
            f" not also under {key!r}"
        ) from None


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path` now; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _summary(change: dict[str, Any]) -> str:
    """One line a person reads at a glance: what, to which group, why, how it ended, and the
    values in the plan's own notation (`name: "old" -> "new"`, `members: +a -b`)."""
    head = f"{change['action']} {change['key']} ({change['cause']}): {change['status']}"
    if change["error"]:
        head += f" ({change['error']})"
    parts = [head]
    for field, d in sorted(change["diff"].items()):
        parts.append(f"{field}: {show_value(d['before'])} -> {show_value(d['after'])}")
    if change["members_added"] or change["members_removed"]:
        members = show_members(change["members_added"] or (), change["members_removed"] or ())
        parts.append(f"members: {members}")
    archived = change.get("set_archived")
    if archived is not None and change["action"] not in (Action.ARCHIVE, Action.RESTORE):
        parts.append(f"archived: {'true' if archived else 'false'}")
    return "; ".join(parts)
