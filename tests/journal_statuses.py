"""A journal file whose `changes.status` accepts every ChangeStatus, for tests of stopped runs.

`skipped` and `unknown` need the journal's v3 migration, which widens the status CHECK and is
written separately. Until it is merged, a test that stops a run prepares its journal here; once
Journal.open makes journals that accept every status, this leaves the file as it is.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from groupsync.journal import Journal
from groupsync.outcomes import ChangeStatus


def journal_accepting_every_status(path: Path) -> Path:
    """Create the journal at `path` (it must not hold changes yet); return the path."""
    Journal.open(path).close()
    conn = sqlite3.connect(path)
    try:
        (table,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'changes'").fetchone()
        if all(f"'{status}'" in table for status in ChangeStatus):
            return path
        indexes = [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'changes' AND type = 'index'"
                " AND sql IS NOT NULL"
            )
        ]
        allowed = ", ".join(f"'{status}'" for status in ChangeStatus)
        widened = re.sub(r"CHECK \(status IN \([^)]*\)\)", f"CHECK (status IN ({allowed}))", table)
        with conn:
            conn.execute("DROP TABLE changes")
            conn.execute(widened)
            for sql in indexes:
                conn.execute(sql)
    finally:
        conn.close()
    return path
