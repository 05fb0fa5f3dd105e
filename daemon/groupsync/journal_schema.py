"""The journal's schema and how an older file is brought up to it.

MIGRATIONS[n] takes a journal from schema version n to n + 1 (PRAGMA user_version). A new journal
runs them all, so the upgrade path of an old file is the same code every new file goes through.
Append only: a released step never changes, so each step spells out its own SQL (a step that read
the code's enums would do something else once they change). Steps run their SQL through
sqlite-utils' `db.execute`, which joins the step's transaction, and read the schema with its
introspection; `migrate` owns the transactions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from groupsync.journal_errors import JournalError

# "gsyn": marks the file as a groupsync journal for `file(1)` and for the open-time check.
APPLICATION_ID = 0x6773796E


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


_CHANGES_INDEXES = (
    "CREATE INDEX changes_by_key ON changes(key, id)",
    "CREATE INDEX changes_by_run ON changes(run_id, id)",
    "CREATE INDEX changes_pending ON changes(status) WHERE status = 'pending'",
)


def _v2_timings_notes_indexes(db: Database) -> None:
    for sql in (
        "ALTER TABLE runs ADD COLUMN spec_dirty INTEGER",
        "ALTER TABLE runs ADD COLUMN plan_checksum TEXT",
        "ALTER TABLE changes ADD COLUMN members_cause TEXT",
        "ALTER TABLE changes ADD COLUMN set_archived INTEGER",
        "ALTER TABLE changes ADD COLUMN duration_ms INTEGER",
        "ALTER TABLE changes ADD COLUMN note TEXT",
        *_CHANGES_INDEXES,
        # One group, one key: two keys owning a group would fight over it forever.
        "CREATE UNIQUE INDEX groups_by_group_id ON groups(group_id)",
    ):
        db.execute(sql)


# v1 wrote `status TEXT NOT NULL` and its CHECK on two lines; a hand-made file may lack the CHECK.
_STATUS_COLUMN = re.compile(r"status TEXT NOT NULL\s*(CHECK \(status IN \([^)]*\)\))?")


def _v3_skipped_unknown_statuses(db: Database) -> None:
    """Allow `skipped` and `unknown`: what a stopped run or one past its deadline leaves.

    SQLite cannot alter a CHECK, so the table is rebuilt as SQLite's ALTER TABLE procedure
    does: a new table from the stored CREATE with the new CHECK (every column as the file has
    it, in order), copy, drop, rename, indexes; all inside the migration's transaction. Nothing
    references `changes`, so no foreign key moves.
    """
    sql = db.table("changes").schema
    created, found = _STATUS_COLUMN.subn(
        "status TEXT NOT NULL CHECK (status IN"
        " ('pending', 'applied', 'failed', 'interrupted', 'skipped', 'unknown'))",
        sql.replace("CREATE TABLE changes", "CREATE TABLE changes_v3", 1),
    )
    if found != 1:
        raise ValueError(f"its changes table is not one groupsync made: {sql}")
    db.execute(created)
    db.execute("INSERT INTO changes_v3 SELECT * FROM changes")
    db.execute("DROP TABLE changes")  # its indexes go with it
    db.execute("ALTER TABLE changes_v3 RENAME TO changes")
    for index in _CHANGES_INDEXES:
        db.execute(index)


def _v4_run_rosters(db: Database) -> None:
    """Each run's rosters as read (JSON: name, digest, counts): what the roster safety check
    compares with, and what `history` shows."""
    db.execute("ALTER TABLE runs ADD COLUMN rosters TEXT")


def _v5_messages(db: Database) -> None:
    """The outbox: each message `pending` before it is posted, then how it ended. One row per
    (run, key, kind): a message is never posted twice for one run. `problems`: an admin
    summary's refusals and errors, so an unchanged repeat is not posted again."""
    db.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            conversation_id TEXT,
            text TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'sent', 'failed', 'unknown', 'skipped')),
            message_id TEXT,
            problems TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            UNIQUE (run_id, key, kind)
        )"""
    )
    db.execute("CREATE INDEX messages_by_key ON messages(key, kind, id)")
    db.execute("CREATE INDEX messages_pending ON messages(status) WHERE status = 'pending'")


def _v6_webhook_events(db: Database) -> None:
    """The ids of the webhook events received, with when: a delivery repeated (eCampus retries,
    or a replay) is recognised for as long as ids are kept."""
    db.execute(
        """CREATE TABLE webhook_events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            received_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX webhook_events_by_time ON webhook_events (received_at)")


MIGRATIONS: tuple[Callable[[Database], None], ...] = (
    _v1_tables,
    _v2_timings_notes_indexes,
    _v3_skipped_unknown_statuses,
    _v4_run_rosters,
    _v5_messages,
    _v6_webhook_events,
)
SCHEMA_VERSION = len(MIGRATIONS)


def check_identity(db: Database, path: Path) -> int:
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
    if app_id not in (0, APPLICATION_ID) or (version == 0 and db.table_names()):
        raise JournalError(f"journal {path}: not a groupsync journal (it holds other data)")
    return version


def migrate(db: Database, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION, each step in its own transaction.

    BEGIN IMMEDIATE and a re-read of the version inside it: two processes opening a new journal
    at once (a `plan` next to the daemon) must not both run the same step.
    """
    conn = db.conn
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = check_identity(db, path)
            if version < SCHEMA_VERSION:
                try:
                    MIGRATIONS[version](db)
                except ValueError as exc:
                    raise JournalError(
                        f"journal {path}: cannot upgrade it to v{version + 1}: {exc}"
                    ) from None
                db.execute(f"PRAGMA user_version = {version + 1}")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if version == SCHEMA_VERSION:
            return
