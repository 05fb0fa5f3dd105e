"""The journal against real SQLite files: schema, migration, durability, the writer lock."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from groupsync.errors import GroupsyncError
from groupsync.journal import SCHEMA_VERSION, Journal, JournalError, JournalLocked
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
        assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        run = j.start_run(trigger="manual", mode="plan", spec_digest="d1")
        sql: list[str] = []
        with j._db.tracer(lambda statement, params: sql.append(statement.split(" (")[0])):
            j.begin_change(run, Change("k", Action.CREATE, Cause.SPEC, "K"))
            j.begin_change(run, _update())
        # a create's pending row is committed with an fsync, the other rows are not
        assert sql == [
            "PRAGMA synchronous=FULL",
            "INSERT INTO changes",
            "PRAGMA synchronous=NORMAL",
            "INSERT INTO changes",
        ]
        assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    conn = sqlite3.connect(path)  # any SQLite reader, no groupsync code
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"runs", "changes", "groups"}
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
    assert pending["id"] == change_id and pending["status"] == "pending"
    assert pending["diff"] == {"name": {"before": "CS 100", "after": "CS 101", "cause": "spec"}}

    journal.settle_change(
        change_id, status="failed", attempts=3, http_status=503, error="HTTP 503", note="gave up"
    )
    journal.finish_run(run, outcome="failed", counts={"update": 1, "failed": 1}, error="cs101")
    assert journal.pending_changes() == []

    [entry] = journal.history()
    assert entry["outcome"] == "failed" and entry["counts"] == {"update": 1, "failed": 1}
    assert entry["spec_dirty"] is True and ISO_UTC.match(entry["finished_at"])
    [row] = entry["changes"]
    assert (row["status"], row["attempts"], row["http_status"]) == ("failed", 3, 503)
    assert row["members_added"] == ["hector"] and row["members_removed"] == ["zed"]
    assert row["duration_ms"] >= 0 and row["note"] == "gave up"
    assert "update cs101" in row["summary"] and "HTTP 503" in row["summary"]


def test_error_texts_are_masked_of_every_secret_the_process_holds(tmp_path: Path) -> None:
    secret = Secret("sk-live-9f8e7d6c5b4a3210")
    echoed = f"HTTP 400 Bearer {secret.reveal()}: bad"
    with Journal.open(tmp_path / "groupsync.db") as journal:
        run = journal.start_run(trigger="manual", mode="apply", spec_digest="d1")
        change = journal.begin_change(run, _update())
        journal.settle_change(change, status="failed", error=echoed, note=echoed)
        journal.finish_run(run, outcome="failed", counts={}, error=echoed)
        history = json.dumps(journal.history())
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
    assert [r["spec_digest"] for r in journal.history(limit=3)] == ["d4", "d3", "d2"]
    only_a = journal.history(key="a")
    assert [r["spec_digest"] for r in only_a] == ["d3", "d1"]
    assert all([c["key"] for c in r["changes"]] == ["a"] for r in only_a)
    noop = journal.start_run(trigger="manual", mode="apply", spec_digest="d5")
    assert journal.history(limit=1)[0]["id"] == noop  # runs without changes are history too


def test_managed_map_round_trips_and_keeps_managed_since(journal: Journal) -> None:
    state = AppliedState("CS 101", None, "https://x/a.png", frozenset({"b", "a"}), False)
    journal.set_managed("cs101", "g1", state)
    since = journal._db.execute("SELECT managed_since FROM groups").fetchone()[0]
    moved = AppliedState("CS 101", "desc", None, None, True)
    journal.set_managed("cs101", "g2", moved)  # recreated after a deletion out of band
    [mg] = journal.managed().values()
    assert (mg.key, mg.group_id, mg.applied) == ("cs101", "g2", moved)
    assert journal._db.execute("SELECT managed_since FROM groups").fetchone()[0] == since
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
        assert j._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert j.managed()["cs101"].applied.members == frozenset({"ada"})
        [old] = j.history()
        assert old["changes"][0]["status"] == "applied" and old["changes"][0]["note"] is None
        run = j.start_run(trigger="manual", mode="apply", spec_digest="d1", spec_dirty=False)
        j.settle_change(j.begin_change(run, _update()), status="applied", note="new columns")
        assert j.history(limit=1)[0]["changes"][0]["note"] == "new columns"
        indexes = {r[0] for r in j._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
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
    with pytest.raises(JournalError, match=r"cannot use it \(file is not a database\)"):
        Journal.open(text)
    with pytest.raises(JournalError, match="does not exist"):
        Journal.open(tmp_path / "missing-dir" / "groupsync.db")


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "groupsync.db"
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Journal.open(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    with Journal.open(path) as j:
        assert j._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
        assert (row["key"], row["action"], row["name"]) == ("k", "create", "K")
