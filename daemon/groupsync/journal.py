"""The SQLite journal: runs, every change before and after its API call, and the managed groups.

It is the only memory groupsync has: which group each key owns (without it nothing is managed)
and what it last made each group look like (without it drift cannot be told from spec). So it is
written in WAL mode and a change row is written `pending` before its API call, which makes a
crash leave a truthful record that `apply.recover_pending` can settle.

Durability: synchronous=NORMAL, except the commit of a create's `pending` row, which is FULL.
In WAL mode NORMAL loses nothing when the process dies (SIGKILL, OOM): only an OS crash or power
loss can roll back the last commits, and then the next plan still re-reads the API and adopts
by name, so no group is duplicated and no wrong write follows; only the record of those last
moments goes. The one row worth an fsync is a create's `pending` row, so recovery can adopt
what that POST made by itself (its FULL commit syncs the WAL, and with it every commit before).
An fsync per commit would block the event loop: 1,000 changes took 12.9 s instead of 5.9 s.

Plain SQLite, readable by `sqlite3`, sqlite-utils and Datasette as it is: timestamps are ISO-8601
UTC text (`2026-11-27T01:53:47.123Z`, sortable as text), structured values are JSON text.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from groupsync.canonical import canonical_json
from groupsync.errors import GroupsyncError
from groupsync.outcomes import ChangeStatus, RunOutcome
from groupsync.plan import Action, AppliedState, Change, ManagedGroup
from groupsync.render import show_members, show_value
from groupsync.secret import redact_secrets

# "gsyn": marks the file as a groupsync journal for `file(1)` and for the open-time check.
APPLICATION_ID = 0x6773796E


class JournalLocked(GroupsyncError):
    """Another process is applying with this journal: racing it would write twice."""


class JournalError(GroupsyncError):
    """The journal file cannot be used (unreadable, foreign, or written by a newer groupsync)."""


class JournalReplaced(JournalError):
    """The journal or its lock file was deleted or replaced under this process.

    Writing on would record changes in a file nobody reads, while the fresh lock lets a second
    writer start on the new file: two writers planning the same new key create two groups.
    """


def now_iso() -> str:
    """One timestamp format everywhere: UTC, milliseconds, `Z`; sorts correctly as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- schema --------------------------------------------------------------------------------------
# MIGRATIONS[n] takes a journal from schema version n to n + 1 (PRAGMA user_version). A new journal
# runs them all, so the upgrade path of an old file is the same code every new file goes through.
# Append only: a released step never changes.


def _v1_tables(db: Database) -> None:
    db.execute(
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            trigger TEXT NOT NULL,
            mode TEXT NOT NULL,
            spec_digest TEXT,
            spec_commit TEXT,
            outcome TEXT,
            counts TEXT,
            error TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE changes (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            key TEXT NOT NULL,
            group_id TEXT,
            name TEXT NOT NULL,
            action TEXT NOT NULL,
            cause TEXT NOT NULL,
            diff TEXT NOT NULL DEFAULT '{}',
            members_added TEXT NOT NULL DEFAULT '[]',
            members_removed TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'applied', 'failed', 'interrupted')),
            attempts INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE groups (
            key TEXT PRIMARY KEY,
            group_id TEXT NOT NULL,
            name TEXT NOT NULL,
            managed_since TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            applied TEXT
        )"""
    )


def _v2_timings_notes_indexes(db: Database) -> None:
    for sql in (
        "ALTER TABLE runs ADD COLUMN spec_dirty INTEGER",
        "ALTER TABLE runs ADD COLUMN plan_checksum TEXT",
        "ALTER TABLE changes ADD COLUMN members_cause TEXT",
        "ALTER TABLE changes ADD COLUMN set_archived INTEGER",
        "ALTER TABLE changes ADD COLUMN duration_ms INTEGER",
        "ALTER TABLE changes ADD COLUMN note TEXT",
        "CREATE INDEX changes_by_key ON changes(key, id)",
        "CREATE INDEX changes_by_run ON changes(run_id, id)",
        "CREATE INDEX changes_pending ON changes(status) WHERE status = 'pending'",
        # One group, one key: two keys owning a group would fight over it forever.
        "CREATE UNIQUE INDEX groups_by_group_id ON groups(group_id)",
    ):
        db.execute(sql)


MIGRATIONS: tuple[Callable[[Database], None], ...] = (_v1_tables, _v2_timings_notes_indexes)
SCHEMA_VERSION = len(MIGRATIONS)


def _json(value: Any) -> str:
    return canonical_json(value)


def _masked(text: str | None) -> str | None:
    """Free text from errors, with every secret the process holds masked: the API client redacts
    what servers send, and this catches whatever else an error may have picked up."""
    return None if text is None else redact_secrets(text)


def _applied_to_json(applied: AppliedState) -> str:
    return _json(
        {
            "name": applied.name,
            "description": applied.description,
            "avatar_url": applied.avatar_url,
            "members": None if applied.members is None else sorted(applied.members),
            "archived": applied.archived,
        }
    )


def _applied_from_json(text: str | None) -> AppliedState | None:
    if text is None:
        return None
    data = json.loads(text)
    members = data.get("members")
    return AppliedState(
        name=data["name"],
        description=data.get("description"),
        avatar_url=data.get("avatar_url"),
        members=None if members is None else frozenset(members),
        archived=bool(data.get("archived")),
    )


class Journal:
    """One journal file. Safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: Path, db: Database) -> None:
        self.path = path
        self._db = db
        self._lock = threading.RLock()
        self._opened = _file_identity(path)  # what ensure_still_held compares the path with
        self._lock_fd: int | None = None  # the writer lock's file, while it is held

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Journal:
        """Open or create the journal, migrating an older schema; refuse a newer or foreign file."""
        path = Path(path)
        if not path.parent.is_dir():
            raise JournalError(f"journal {path}: directory {path.parent} does not exist")
        try:
            # check_same_thread=False: the lock in Journal serialises use, so a daemon may touch
            # it from a health-check thread; timeout: wait out a Datasette reader's brief locks.
            conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {path}: cannot open ({exc})") from None
        try:
            db = Database(conn, execute_plugins=False)
            with db.atomic():  # one snapshot: another process may be migrating right now
                _check_identity(db, path)
            db.enable_wal()
            # synchronous resets on every connection: set it each time (see the module docstring).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            _migrate(db, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalError(f"journal {path}: cannot use it ({exc})") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- one writer --------------------------------------------------------------------------

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold `<journal>.lock` exclusively while applying; a second writer fails at once.

        flock, not a pid file: the kernel drops it when the holder dies (even by SIGKILL), so a
        crash never leaves a stale lock behind. The pid written inside is only for the message.
        """
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
    ) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO runs (started_at, trigger, mode, spec_digest, spec_commit, spec_dirty)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now_iso(), trigger, mode, spec_digest, spec_commit, spec_dirty),
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
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, error = ?,"
                " plan_checksum = coalesce(?, plan_checksum) WHERE id = ?",
                (now_iso(), outcome, _json(counts), _masked(error), plan_checksum, run_id),
            )

    # --- changes -----------------------------------------------------------------------------

    def begin_change(self, run_id: int, change: Change) -> int:
        """Record the change as `pending` before its API call is sent (a create's, with fsync)."""
        diff = {
            f.field: {"before": f.old, "after": f.new, "cause": str(f.cause)} for f in change.fields
        }
        with self._lock, self._synchronous("FULL" if change.action is Action.CREATE else None):
            cursor = self._db.execute(
                "INSERT INTO changes (run_id, key, group_id, name, action, cause, diff,"
                " members_added, members_removed, members_cause, set_archived, status,"
                " started_at, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
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
                    now_iso(),
                    change.note or None,
                ),
            )
            return int(cursor.lastrowid)  # type: ignore[arg-type]

    @contextmanager
    def _synchronous(self, level: str | None) -> Iterator[None]:
        """Commits inside the block use this synchronous level (None: leave it)."""
        if level is None:
            yield
            return
        self._db.execute(f"PRAGMA synchronous={level}")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

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
        with self._lock:
            cursor = self._db.execute(
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

    def pending_changes(self) -> list[dict[str, Any]]:
        """Changes a crashed run left unsettled, oldest first."""
        with self._lock:
            rows = list(
                self._db.query("SELECT * FROM changes WHERE status = 'pending' ORDER BY id")
            )
        return [_change_dict(r) for r in rows]

    # --- managed groups ----------------------------------------------------------------------

    def managed(self) -> dict[str, ManagedGroup]:
        with self._lock:
            rows = list(self._db.query("SELECT key, group_id, applied FROM groups ORDER BY key"))
        return {
            r["key"]: ManagedGroup(r["key"], r["group_id"], _applied_from_json(r["applied"]))
            for r in rows
        }

    def set_managed(self, key: str, group_id: str, applied: AppliedState) -> None:
        """Map key -> group (keeping `managed_since`) and remember the state groupsync gave it."""
        now = now_iso()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO groups (key, group_id, name, managed_since, updated_at, applied)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                    " group_id = excluded.group_id, name = excluded.name,"
                    " updated_at = excluded.updated_at, applied = excluded.applied",
                    (key, group_id, applied.name, now, now, _applied_to_json(applied)),
                )
            except sqlite3.IntegrityError:  # groups_by_group_id: the group has another key
                owner = self._db.execute(
                    "SELECT key FROM groups WHERE group_id = ?", [group_id]
                ).fetchone()
                raise GroupsyncError(
                    f"group {group_id} is already managed under key {owner[0]!r};"
                    f" not also under {key!r}"
                ) from None

    def forget(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM groups WHERE key = ?", [key])

    # --- history -----------------------------------------------------------------------------

    def history(self, *, limit: int = 20, key: str | None = None) -> list[dict[str, Any]]:
        """The last `limit` runs, newest first, each with its changes (only `key`'s if given)."""
        with self._lock:
            if key is None:
                runs = list(self._db.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", [limit]))
            else:
                runs = list(
                    self._db.query(
                        "SELECT * FROM runs WHERE id IN"
                        " (SELECT run_id FROM changes WHERE key = ?) ORDER BY id DESC LIMIT ?",
                        [key, limit],
                    )
                )
            ids = [r["id"] for r in runs]
            by_run: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                marks = ",".join("?" * len(ids))
                where = f"run_id IN ({marks})" + (" AND key = ?" if key is not None else "")
                params = [*ids, key] if key is not None else ids
                for row in self._db.query(
                    f"SELECT * FROM changes WHERE {where} ORDER BY id", params
                ):
                    by_run[row["run_id"]].append(_change_dict(row))
        return [_run_dict(r, by_run[r["id"]]) for r in runs]


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path` now; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_identity(db: Database, path: Path) -> int:
    """The schema version; refuses a newer schema or somebody else's database.

    Call inside a transaction, so the version and the table list come from one snapshot.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path}: schema v{version} is newer than this groupsync"
            f" (v{SCHEMA_VERSION}); upgrade groupsync"
        )
    foreign = app_id not in (0, APPLICATION_ID) or (version == 0 and db.table_names())
    if foreign:
        raise JournalError(f"journal {path}: not a groupsync journal (it holds other data)")
    return version


def _migrate(db: Database, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION, each step in its own transaction.

    BEGIN IMMEDIATE and a re-read of the version inside it: two processes opening a new journal
    at once (a `plan` next to the daemon) must not both run the same step.
    """
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _check_identity(db, path)
            if version == SCHEMA_VERSION:
                db.execute("COMMIT")
                return
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise


def _change_dict(row: dict[str, Any]) -> dict[str, Any]:
    change = dict(row)
    for column in ("diff", "members_added", "members_removed"):
        change[column] = json.loads(change[column]) if change[column] is not None else None
    if change.get("set_archived") is not None:
        change["set_archived"] = bool(change["set_archived"])
    change["summary"] = _summary(change)
    return change


def _run_dict(row: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    run = dict(row)
    run["counts"] = json.loads(run["counts"]) if run["counts"] else {}
    if run["spec_dirty"] is not None:
        run["spec_dirty"] = bool(run["spec_dirty"])
    run["changes"] = changes
    return run


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
