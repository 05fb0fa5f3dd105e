"""The journal against real SQLite files: schema, migration, durability, the writer lock."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from groupsync.errors import GroupsyncError
from groupsync.journal import (
    SCHEMA_VERSION,
    ChangeRecord,
    Journal,
    JournalError,
    JournalLocked,
    RunRecord,
)
from groupsync.journal_schema import APPLICATION_ID, MIGRATIONS
from groupsync.outcomes import ChangeStatus, RunOutcome
from groupsync.plan import Action, AppliedState, Cause, Change, FieldChange
from groupsync.secret import Secret
from helpers import token_pieces

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _update(key: str = "cs101", group_id: str = "g1") -> Change:
    return Change(
        key=key,
        action=Action.UPDATE,
        cause=Cause.DRIFT,
        name="CS 101",
        group_id=group_id,
        fields=(FieldChange("name", "CS 100", "CS 101", Cause.SPEC),),
        members_add=("hector",),
        members_remove=("zed",),
        members_cause=Cause.DRIFT,
        members=("ada", "hector"),
    )


@pytest.fixture
def journal(tmp_path: Path):
    with Journal.open(tmp_path / "groupsync.db") as j:
        yield j


def test_new_journal_is_plain_sqlite_in_wal_and_fsyncs_pending_creates(tmp_path: Path) -> None:
    path = tmp_path / "groupsync.db"
    with Journal.open(path) as j:
        assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        run = j.start_run(trigger="manual", mode="plan", spec_digest="d1")
        sql: list[str] = []
        j._conn.set_trace_callback(lambda statement: sql.append(statement.split(" (")[0]))
        j.begin_change(run, Change("k", Action.CREATE, Cause.SPEC, "K"))
        j.begin_change(run, _update())
        j._conn.set_trace_callback(None)
        # a create's pending row is committed with an fsync, the other rows are not
        assert sql == [
            "PRAGMA synchronous=FULL",
            "BEGIN IMMEDIATE",
            "INSERT INTO changes",
            "COMMIT",
            "PRAGMA synchronous=NORMAL",
            "BEGIN IMMEDIATE",
            "INSERT INTO changes",
            "COMMIT",
        ]
        assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    conn = sqlite3.connect(path)  # any SQLite reader, no groupsync code
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"runs", "changes", "groups", "messages", "webhook_events"}
        (started,) = conn.execute("SELECT started_at FROM runs").fetchone()
        assert ISO_UTC.match(started)
    finally:
        conn.close()
    out = subprocess.run(
        [Path(sys.executable).with_name("sqlite-utils"), "rows", str(path), "runs"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert json.loads(out)[0]["trigger"] == "manual"


def test_a_change_is_pending_until_settled_and_history_tells_it(journal: Journal) -> None:
    run = journal.start_run(trigger="schedule", mode="apply", spec_digest="d1", spec_dirty=True)
    change_id = journal.begin_change(run, _update())
    [pending] = journal.pending_changes()
    assert pending.id == change_id and pending.status == "pending"
    assert pending.diff == {"name": {"before": "CS 100", "after": "CS 101", "cause": "spec"}}

    journal.settle_change(
        change_id, status="failed", attempts=3, http_status=503, error="HTTP 503", note="gave up"
    )
    journal.finish_run(run, outcome="failed", counts={"update": 1, "failed": 1}, error="cs101")
    assert journal.pending_changes() == []

    [entry] = journal.history()
    assert entry.outcome == "failed" and entry.counts == {"update": 1, "failed": 1}
    assert entry.spec_dirty is True and ISO_UTC.match(entry.finished_at)
    [row] = entry.changes
    assert (row.status, row.attempts, row.http_status) == ("failed", 3, 503)
    assert row.members_added == ("hector",) and row.members_removed == ("zed",)
    assert row.duration_ms >= 0 and row.note == "gave up"
    assert "update cs101" in row.summary and "HTTP 503" in row.summary


def test_error_texts_are_masked_of_every_secret_the_process_holds(tmp_path: Path) -> None:
    secret = Secret("sk-live-9f8e7d6c5b4a3210")
    echoed = f"HTTP 400 Bearer {secret.reveal()}: bad"
    with Journal.open(tmp_path / "groupsync.db") as journal:
        run = journal.start_run(trigger="manual", mode="apply", spec_digest="d1")
        change = journal.begin_change(run, _update())
        journal.settle_change(change, status="failed", error=echoed, note=echoed)
        journal.finish_run(run, outcome="failed", counts={}, error=echoed)
        history = json.dumps([run.to_json() for run in journal.history()])
    assert "HTTP 400 Bearer **********: bad" in history
    for name in ("groupsync.db", "groupsync.db-wal"):
        if (tmp_path / name).exists():
            assert token_pieces((tmp_path / name).read_bytes(), secret.reveal()) == []


def test_history_is_newest_first_limited_and_filtered_by_key(journal: Journal) -> None:
    for n in range(5):
        run = journal.start_run(trigger="schedule", mode="apply", spec_digest=f"d{n}")
        for key in ("a", "b") if n % 2 else ("b",):
            cid = journal.begin_change(run, _update(key, group_id=f"id-{key}"))
            journal.settle_change(cid, status="applied", attempts=1, http_status=200)
        journal.finish_run(run, outcome="applied", counts={})
    assert [r.spec_digest for r in journal.history(limit=3)] == ["d4", "d3", "d2"]
    only_a = journal.history(key="a")
    assert [r.spec_digest for r in only_a] == ["d3", "d1"]
    assert all([c.key for c in r.changes] == ["a"] for r in only_a)
    noop = journal.start_run(trigger="manual", mode="apply", spec_digest="d5")
    assert journal.history(limit=1)[0].id == noop  # runs without changes are history too


def test_managed_map_round_trips_and_keeps_managed_since(journal: Journal) -> None:
    state = AppliedState("CS 101", None, "https://x/a.png", frozenset({"b", "a"}), False)
    journal.set_managed("cs101", "g1", state)
    since = journal._conn.execute("SELECT managed_since FROM groups").fetchone()[0]
    moved = AppliedState("CS 101", "desc", None, None, True)
    journal.set_managed("cs101", "g2", moved)  # recreated after a deletion out of band
    [mg] = journal.managed().values()
    assert (mg.key, mg.group_id, mg.applied) == ("cs101", "g2", moved)
    assert journal._conn.execute("SELECT managed_since FROM groups").fetchone()[0] == since
    with pytest.raises(GroupsyncError, match="already managed under key 'cs101'"):
        journal.set_managed("other", "g2", moved)
    journal.forget("cs101")
    assert journal.managed() == {}


def test_settling_as_pending_is_refused(journal: Journal) -> None:
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
    cid = journal.begin_change(run, _update())
    with pytest.raises(ValueError):
        journal.settle_change(cid, status="pending")


V1_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
  trigger TEXT NOT NULL, mode TEXT NOT NULL, spec_digest TEXT, spec_commit TEXT, outcome TEXT,
  counts TEXT, error TEXT);
CREATE TABLE changes (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),
  key TEXT NOT NULL, group_id TEXT, name TEXT NOT NULL, action TEXT NOT NULL,
  cause TEXT NOT NULL, diff TEXT NOT NULL DEFAULT '{}', members_added TEXT NOT NULL DEFAULT '[]',
  members_removed TEXT NOT NULL DEFAULT '[]', status TEXT NOT NULL, attempts INTEGER NOT NULL
  DEFAULT 0, http_status INTEGER, error TEXT, started_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE groups (key TEXT PRIMARY KEY, group_id TEXT NOT NULL, name TEXT NOT NULL,
  managed_since TEXT NOT NULL, updated_at TEXT NOT NULL, applied TEXT);
INSERT INTO runs VALUES (1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z', 'schedule',
  'apply', 'd0', NULL, 'applied', '{"create":1}', NULL);
INSERT INTO changes VALUES (1, 1, 'cs101', 'g1', 'CS 101', 'create', 'spec', '{}', '["ada"]',
  '[]', 'applied', 1, 201, NULL, '2026-01-01T00:00:00.100Z', '2026-01-01T00:00:00.200Z');
INSERT INTO groups VALUES ('cs101', 'g1', 'CS 101', '2026-01-01T00:00:00.200Z',
  '2026-01-01T00:00:00.200Z', '{"name":"CS 101","description":null,"avatar_url":null,
  "members":["ada"],"archived":false}');
PRAGMA user_version = 1;
"""


def test_a_v1_journal_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.close()
    with Journal.open(path) as j:
        assert j._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert j.managed()["cs101"].applied.members == frozenset({"ada"})
        [old] = j.history()
        assert old.changes[0].status == "applied" and old.changes[0].note is None
        run = j.start_run(trigger="manual", mode="apply", spec_digest="d1", spec_dirty=False)
        j.settle_change(j.begin_change(run, _update()), status="applied", note="new columns")
        assert j.history(limit=1)[0].changes[0].note == "new columns"
        indexes = {
            r[0] for r in j._conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        assert "changes_by_key" in indexes


def test_a_newer_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(JournalError) as info:
        Journal.open(path)
    assert str(info.value) == (
        f"journal {path}: schema v{SCHEMA_VERSION + 7} is newer than this groupsync"
        f" (v{SCHEMA_VERSION}); upgrade groupsync"
    )
    assert path.read_bytes() == before


def test_other_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(JournalError, match="not a groupsync journal"):
        Journal.open(foreign)
    text = tmp_path / "notes.db"
    text.write_text("this is not a database, just some text that is long enough" * 20)
    with pytest.raises(JournalError) as info:
        Journal.open(text)
    assert str(info.value) == (
        f"journal {text}: cannot open it: file is not a database; it is not an SQLite database,"
        " or its header is damaged: check journal.path, or restore the file from a backup"
    )
    with pytest.raises(JournalError, match="does not exist"):
        Journal.open(tmp_path / "missing-dir" / "groupsync.db")


@pytest.mark.slow
def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    """Six threads open one new journal together, 150 times over: SQLite sometimes refuses the
    switch to WAL at once, without its busy timeout (about 1 in 75 such opens before the
    journal waited it out), so one try would rarely see it."""
    for trial in range(150):
        path = tmp_path / f"groupsync-{trial}.db"
        errors: list[BaseException] = []

        def open_it(path: Path = path, errors: list[BaseException] = errors) -> None:
            try:
                Journal.open(path).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == [], f"trial {trial}"
        with Journal.open(path) as j:
            assert j._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _child(code: str, *args: str, umask: int = -1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=umask,
    )


HOLD_LOCK = """
    import sys
    from pathlib import Path
    from groupsync.journal import Journal
    with Journal.open(Path(sys.argv[1])) as j, j.writer_lock():
        print("locked", flush=True)
        sys.stdin.readline()
"""


def test_a_second_writer_is_refused_at_once_while_another_process_holds_the_lock(
    journal: Journal,
) -> None:
    child = _child(HOLD_LOCK, str(journal.path))
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(JournalLocked) as info, journal.writer_lock():
            pass
        assert str(info.value) == (
            f"another groupsync apply/run holds {journal.path} (pid {child.pid})"
        )
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        child.wait(timeout=30)
    with journal.writer_lock():  # released when the holder let go
        pass


def test_the_lock_dies_with_a_killed_holder_and_blocks_other_processes(journal: Journal) -> None:
    child = _child(HOLD_LOCK, str(journal.path))
    try:
        assert child.stdout.readline().strip() == "locked"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait(timeout=30)
    with journal.writer_lock():
        other = _child(
            """
            import sys
            from pathlib import Path
            from groupsync.journal import Journal, JournalLocked
            with Journal.open(Path(sys.argv[1])) as j:
                try:
                    with j.writer_lock():
                        sys.exit("got the lock")
                except JournalLocked as exc:
                    print(exc)
            """,
            str(journal.path),
        )
        out, err = other.communicate(timeout=30)
        assert other.returncode == 0, err
        assert (
            out.strip() == f"another groupsync apply/run holds {journal.path} (pid {os.getpid()})"
        )


def test_a_pending_row_survives_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "groupsync.db"
    child = _child(
        """
        import sys, time
        from pathlib import Path
        from groupsync.journal import Journal
        from groupsync.plan import Action, Cause, Change
        j = Journal.open(Path(sys.argv[1]))
        run = j.start_run(trigger="manual", mode="apply", spec_digest="d")
        j.begin_change(run, Change(key="k", action=Action.CREATE, cause=Cause.SPEC, name="K"))
        print("pending", flush=True)
        sys.stdin.readline()
        """,
        str(path),
    )
    try:
        assert child.stdout.readline().strip() == "pending"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait(timeout=30)
    with Journal.open(path) as j:
        [row] = j.pending_changes()
        assert (row.key, row.action, row.name) == ("k", "create", "K")


# --- schema v3 -----------------------------------------------------------------------------------


def _v2_journal(path: Path) -> None:
    """A journal as the v2 code made it: its migrations only, then rows in every table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for step in MIGRATIONS[:2]:
            step(Database(conn))
        conn.execute("PRAGMA user_version = 2")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
        conn.executescript(
            """
            INSERT INTO runs VALUES (1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z',
              'schedule', 'apply', 'd0', 'abc', 'failed', '{"create":2}', 'k2: HTTP 503', 1, 'c0');
            INSERT INTO changes VALUES (1, 1, 'k1', 'g1', 'K 1', 'create', 'spec', '{}',
              '["ada"]', '[]', 'applied', 1, 201, NULL, '2026-01-01T00:00:00.100Z',
              '2026-01-01T00:00:00.200Z', 'spec', 1, 100, 'archived at once');
            INSERT INTO changes VALUES (2, 1, 'k2', NULL, 'K 2', 'create', 'spec', '{}', '[]',
              '[]', 'failed', 3, 503, 'HTTP 503', '2026-01-01T00:00:00.300Z',
              '2026-01-01T00:00:00.900Z', NULL, NULL, 600, NULL);
            INSERT INTO changes VALUES (3, 1, 'k3', 'g3', 'K 3', 'update', 'drift',
              '{"name":{"after":"K 3","before":"k3","cause":"drift"}}', '[]', '[]', 'pending',
              0, NULL, NULL, '2026-01-01T00:00:00.950Z', NULL, NULL, NULL, NULL, NULL);
            INSERT INTO groups VALUES ('k1', 'g1', 'K 1', '2026-01-01T00:00:00.200Z',
              '2026-01-01T00:00:00.200Z', '{"archived":true,"members":["ada"],"name":"K 1"}');
            """
        )
    finally:
        conn.close()


def _dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("runs", "changes", "groups")
        }
    finally:
        conn.close()


def test_a_v2_journal_upgrades_to_v3_with_its_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _v2_journal(path)
    before = _dump(path)
    v2 = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError):  # what v3 is for: v2 refuses the new statuses
        v2.execute("UPDATE changes SET status = 'unknown' WHERE id = 3")
    v2.close()

    with Journal.open(path) as j:
        assert j._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        # v4 adds runs.rosters, empty for the runs before it; v6 an empty webhook_events.
        assert j._conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0] == 0
        assert _dump(path) == before | {"runs": [(*run, None) for run in before["runs"]]}
        [pending] = j.pending_changes()  # the partial index was rebuilt with the table
        j.settle_change(pending.id, status=ChangeStatus.UNKNOWN, note="run past its deadline")
        run = j.start_run(trigger="manual", mode="apply", spec_digest="d1")
        j.settle_change(j.begin_change(run, _update()), status=ChangeStatus.SKIPPED)
        assert [c.status for c in j.history(limit=2)[1].changes] == ["applied", "failed", "unknown"]
        sql = {
            name: text
            for name, text in j._conn.execute("SELECT name, sql FROM sqlite_master")
            if text is not None
        }
    assert set(sql) == {
        "runs",
        "changes",
        "groups",
        "changes_by_key",
        "changes_by_run",
        "changes_pending",
        "groups_by_group_id",
        "messages",
        "messages_by_key",
        "messages_pending",
        "webhook_events",
        "webhook_events_by_time",
    }
    assert "changes_v3" not in sql["changes"] and "CREATE TABLE" in sql["changes"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_a_changes_table_groupsync_did_not_make_is_not_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA.replace("status TEXT NOT NULL", "status TEXT"))
    conn.close()
    with pytest.raises(JournalError, match=r"odd.db: cannot upgrade it to v3: its changes table"):
        Journal.open(path)
    conn = sqlite3.connect(path)
    try:  # v2 committed, v3 rolled back whole: the table and its rows are as they were
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM changes").fetchone()[0] == 1
        assert "changes_v3" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_the_status_check_takes_every_change_status_and_nothing_else(journal: Journal) -> None:
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
    change = journal.begin_change(run, _update())
    for status in ChangeStatus:  # a new status fails here until a migration allows it
        journal._conn.execute("UPDATE changes SET status = ? WHERE id = ?", (status, change))
    for wrong in ("done", "APPLIED", ""):
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            journal._conn.execute("UPDATE changes SET status = ? WHERE id = ?", (wrong, change))


# --- transactions --------------------------------------------------------------------------------


def test_every_write_is_committed_before_it_returns(journal: Journal) -> None:
    """Another connection sees each write at once: nothing waits for a library to commit."""
    other = sqlite3.connect(journal.path)

    def seen(sql: str) -> object:
        assert not journal._conn.in_transaction
        return other.execute(sql).fetchone()

    try:
        run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
        assert seen("SELECT count(*) FROM runs") == (1,)
        change = journal.begin_change(run, Change("k", Action.CREATE, Cause.SPEC, "K"))
        assert seen("SELECT status FROM changes") == ("pending",)
        journal.set_managed("k", "g1", AppliedState("K", None, None, None, False))
        assert seen("SELECT group_id FROM groups") == ("g1",)
        journal.settle_change(change, status=ChangeStatus.APPLIED, group_id="g1")
        assert seen("SELECT status, group_id FROM changes") == ("applied", "g1")
        journal.forget("k")
        assert seen("SELECT count(*) FROM groups") == (0,)
        journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={"create": 1})
        assert seen("SELECT outcome FROM runs") == ("applied",)
        with pytest.raises(GroupsyncError):  # a refused write leaves no transaction open
            journal.set_managed("k2", "g2", AppliedState("K", None, None, None, False))
            journal.set_managed("k3", "g2", AppliedState("K", None, None, None, False))
        assert seen("SELECT key FROM groups") == ("k2",)
    finally:
        other.close()


# --- typed records -------------------------------------------------------------------------------


def test_records_are_typed_and_their_json_has_every_column(journal: Journal) -> None:
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d", spec_dirty=False)
    cid = journal.begin_change(run, _update())
    journal.settle_change(cid, status=ChangeStatus.APPLIED, attempts=1, http_status=200)
    journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={"update": 1}, plan_checksum="c")
    [record] = journal.history()
    [change] = record.changes
    assert isinstance(record, RunRecord) and isinstance(change, ChangeRecord)
    assert record.outcome is RunOutcome.APPLIED and change.status is ChangeStatus.APPLIED
    assert change.action is Action.UPDATE and change.members_cause is Cause.DRIFT
    with pytest.raises(AttributeError):
        change.status = ChangeStatus.FAILED  # type: ignore[misc]

    columns = {
        table: {r[1] for r in journal._conn.execute(f"PRAGMA table_info({table})")}
        for table in ("runs", "changes")
    }
    doc = json.loads(json.dumps(record.to_json()))  # what `history --json` prints
    assert set(doc) == columns["runs"] | {"changes", "messages"}
    assert set(doc["changes"][0]) == columns["changes"] | {"summary"}
    assert doc["outcome"] == "applied" and doc["spec_dirty"] is False
    assert doc["changes"][0]["members_added"] == ["hector"]
    assert doc["changes"][0]["summary"] == change.summary
    assert change.summary == (
        'update cs101 (drift): applied; name: "CS 100" -> "CS 101"; members: +hector -zed'
    )


# --- private files -------------------------------------------------------------------------------


HOLD_OPEN = """
    import sys
    from pathlib import Path
    from groupsync.journal import Journal
    with Journal.open(Path(sys.argv[1])) as j:
        j.start_run(trigger="manual", mode="apply", spec_digest="d")
        print("open", flush=True)
        sys.stdin.readline()
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_journal_and_its_wal_and_shm_are_private_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    path = tmp_path / "groupsync.db"
    child = _child(HOLD_OPEN, str(path), umask=umask)
    try:
        assert child.stdout.readline().strip() == "open", child.stderr.read()
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["groupsync.db", "groupsync.db-shm", "groupsync.db-wal"]
        assert {name: _mode(tmp_path / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        child.kill()
        child.wait(timeout=30)


def test_side_files_left_by_an_older_groupsync_are_made_private(tmp_path: Path) -> None:
    path = tmp_path / "groupsync.db"
    Journal.open(path).close()
    for suffix in ("-wal", "-shm"):
        side = tmp_path / f"groupsync.db{suffix}"
        side.touch()
        side.chmod(0o644)
    with Journal.open(path):
        assert {_mode(p) for p in tmp_path.iterdir()} == {0o600}


# --- a journal that cannot be written ------------------------------------------------------------


def _with_a_run(path: Path) -> None:
    with Journal.open(path) as j:
        run = j.start_run(trigger="manual", mode="apply", spec_digest="d")
        j.set_managed("cs101", "g1", AppliedState("CS 101", None, None, None, False))
        j.finish_run(run, outcome=RunOutcome.APPLIED, counts={})


@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_a_read_only_journal_is_read_but_never_written(tmp_path: Path, read_only: str) -> None:
    """chmod is honoured even by root (these tests run as root, who could write anyway)."""
    folder = tmp_path / "state"
    folder.mkdir()
    path = folder / "groupsync.db"
    _with_a_run(path)
    before = path.read_bytes()
    target = path if read_only == "file" else folder
    target.chmod(0o400 if read_only == "file" else 0o500)
    try:
        with Journal.open(path) as j:
            assert j.managed()["cs101"].group_id == "g1"  # plan and history still work
            assert [r.outcome for r in j.history()] == [RunOutcome.APPLIED]
            mode = "0400" if read_only == "file" else "0500"
            with pytest.raises(JournalError) as info, j.writer_lock():
                pass
            assert str(info.value) == (
                f"journal {path}: cannot apply or run with it: {target} is read-only (mode"
                f" {mode}); make the file and its folder writable by groupsync's user, or set"
                " journal.path to a writable place"
            )
            with pytest.raises(JournalError, match="cannot start a run"):
                j.start_run(trigger="manual", mode="apply", spec_digest="d")
        assert path.read_bytes() == before
    finally:
        target.chmod(0o700)


def test_a_read_only_journal_that_needs_upgrading_says_so(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _v2_journal(path)
    path.chmod(0o444)
    with pytest.raises(JournalError) as info:
        Journal.open(path)
    assert str(info.value) == (
        f"journal {path}: schema v2 must be upgraded to v{SCHEMA_VERSION}, but {path} is read-only"
        " (mode 0444); make it writable once"
    )


def test_a_journal_with_damaged_pages_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "groupsync.db"
    with Journal.open(path) as j:
        for n in range(40):
            run = j.start_run(trigger="schedule", mode="apply", spec_digest=f"d{n}")
            for key in ("a", "b", "c"):
                j.begin_change(run, _update(key, group_id=f"id-{key}"))
    data = bytearray(path.read_bytes())
    assert len(data) >= 10 * 4096
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 4096] = b"\xa5" * 4096  # one whole page in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError) as info:
        Journal.open(path)
    message = str(info.value)
    assert message.startswith(f"journal {path}: ")
    assert message.endswith(
        f"the file is damaged: restore it from a backup, or salvage it with `sqlite3 {path}"
        f" .recover | sqlite3 {path}.recovered` and set journal.path to the new file"
    )
    assert "\n" not in message


def test_a_full_disk_fails_the_write_cleanly_and_the_run_still_ends(tmp_path: Path) -> None:
    """SQLITE_FULL from a real file: the database may not grow, rows that need a page fail."""
    with Journal.open(tmp_path / "groupsync.db") as j:
        run = j.start_run(trigger="manual", mode="apply", spec_digest="d")
        pages = j._conn.execute("PRAGMA page_count").fetchone()[0]
        j._conn.execute(f"PRAGMA max_page_count = {pages}")
        big = Change("k", Action.CREATE, Cause.SPEC, "K", note="x" * 3 * 4096)
        with pytest.raises(JournalError) as info:
            j.begin_change(run, big)
        assert str(info.value) == (
            f"journal {j.path}: cannot record create k before sending it (not sent): database"
            " or disk is full; the disk is full: free space on its file system, then run again"
        )
        assert not j._conn.in_transaction
        assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL
        # Whatever still fits is written: the run ends truthfully.
        j.finish_run(run, outcome=RunOutcome.ERROR, counts={}, error=str(info.value))
        [record] = j.history()
        assert record.outcome is RunOutcome.ERROR and record.finished_at is not None
        assert record.changes == () and j.pending_changes() == []


def test_a_run_end_that_cannot_be_written_says_the_run_could_not_be_recorded(
    journal: Journal,
) -> None:
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(JournalError) as info:
        journal.finish_run(run, outcome=RunOutcome.ERROR, counts={}, error="x" * 3 * 4096)
    assert str(info.value).startswith(
        f"journal {journal.path}: run {run} ended (error) but could not be recorded: database"
        " or disk is full; the disk is full:"
    )
    [record] = journal.history()
    assert record.outcome is None and record.finished_at is None


def _adopt(key: str, group_id: str, note: str = "") -> Change:
    return Change(key, Action.ADOPT, Cause.SPEC, key.upper(), group_id, note=note)


def _state(name: str) -> AppliedState:
    return AppliedState(name, None, None, frozenset({"ada"}), False)


def test_adoptions_that_send_nothing_are_one_transaction_and_a_conflict_fails_alone(
    journal: Journal,
) -> None:
    journal.set_managed("owner", "g2", _state("OWNER"))
    journal.set_managed("a", "g0", _state("A"))  # already managed: managed_since is kept
    [since] = journal._conn.execute("SELECT managed_since FROM groups WHERE key = 'a'").fetchone()
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
    adoptions = [
        (_adopt("a", "g0"), _state("A")),
        (_adopt("b", "g1", note="pinned by `id:`"), _state("B")),
        (_adopt("c", "g2"), _state("C")),  # g2 is owner's
        (_adopt("d", "g3"), _state("D")),
    ]
    sql: list[str] = []
    journal._conn.set_trace_callback(sql.append)
    errors = journal.adopt_unsent(run, adoptions)
    journal._conn.set_trace_callback(None)
    conflict = "group g2 is already managed under key 'owner'; not also under 'c'"
    assert errors == [None, None, conflict, None]
    assert (sql.count("BEGIN IMMEDIATE"), sql.count("COMMIT"), sql.count("ROLLBACK")) == (1, 1, 0)
    rows = {c.key: c for c in journal.history(limit=1)[0].changes}
    assert {k: (c.status, c.group_id, c.error) for k, c in rows.items()} == {
        "a": ("applied", "g0", None),
        "b": ("applied", "g1", None),
        "c": ("failed", "g2", conflict),
        "d": ("applied", "g3", None),
    }
    assert rows["b"].note == "pinned by `id:`" and rows["a"].note is None
    for c in rows.values():  # never pending: started, finished, nothing sent
        assert (c.attempts, c.http_status, c.duration_ms) == (0, None, 0)
        assert c.started_at == c.finished_at
    assert journal.pending_changes() == []
    managed = {k: (mg.group_id, mg.applied) for k, mg in journal.managed().items()}
    assert managed == {
        "owner": ("g2", _state("OWNER")),
        "a": ("g0", _state("A")),
        "b": ("g1", _state("B")),
        "d": ("g3", _state("D")),
    }
    assert journal._conn.execute("SELECT managed_since FROM groups WHERE key = 'a'").fetchone() == (
        since,
    )


def test_a_batch_of_adoptions_that_cannot_be_written_records_none_of_it(
    journal: Journal,
) -> None:
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    adoptions = [(_adopt(f"k{n}", f"g{n}", note="x" * 2048), _state("K")) for n in range(20)]
    with pytest.raises(JournalError, match=r"cannot record a batch of adoptions .* disk is full"):
        journal.adopt_unsent(run, adoptions)
    assert not journal._conn.in_transaction
    assert journal.history(limit=1)[0].changes == () and journal.managed() == {}


def test_changes_a_stopped_run_never_started_are_skipped_in_one_transaction(
    journal: Journal,
) -> None:
    run = journal.start_run(trigger="manual", mode="apply", spec_digest="d")
    sql: list[str] = []
    journal._conn.set_trace_callback(sql.append)
    journal.skip_changes(run, [_update("a"), _adopt("b", "g1", note="pinned")], "not started: x")
    journal._conn.set_trace_callback(None)
    assert sql.count("BEGIN IMMEDIATE") == 1
    rows = journal.history(limit=1)[0].changes
    assert [(c.key, c.status, c.note, c.attempts) for c in rows] == [
        ("a", "skipped", "not started: x", 0),
        ("b", "skipped", "pinned; not started: x", 0),
    ]
    assert journal.managed() == {}
