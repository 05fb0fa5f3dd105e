"""`groupsync run` as a real subprocess against the emulator, as systemd would run it.

The daemon gets a real $NOTIFY_SOCKET (a datagram socket bound here), a 1-second schedule with
no jitter, JSON logs on stderr (parsed here), and a metrics port. Every wait polls with a
deadline and fails with the daemon's log tail. The outage test, which needs minutes of
schedule, runs in-process on a virtual clock: test_daemon_outage.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import TOKEN, RestartableEmulator
from helpers import free_port

T = TypeVar("T")
SPEC = """\
groups:
  chess:
    name: Chess Club
    members: [ada, bob]
  go:
    name: Go Club
    description: Weekly games.
    members: [carol]
"""
RUN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 45.0  # a run still going 30 s after SIGTERM is cancelled: the last resort


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, log: Callable[[], str]
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n--- daemon log ---\n{log()}")


class DaemonProcess:
    """One `groupsync run` subprocess, its JSON log, and what it sent to $NOTIFY_SOCKET."""

    def __init__(self, workdir: Path, config: Path, *args: str, env: dict[str, str]) -> None:
        # sun_path is limited to 108 bytes: pytest's tmp_path can be longer.
        self._sockdir = tempfile.TemporaryDirectory(prefix="gs-")
        self.notify_path = os.path.join(self._sockdir.name, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        # systemd reads its notify socket at once; left unread, the daemon's sends are dropped.
        self._reading = True
        self._reader = threading.Thread(target=self._read_notifications, daemon=True)
        self._reader.start()
        self.log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        clean = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "groupsync", "run", "--config", str(config), *args],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean | {"NOTIFY_SOCKET": self.notify_path, "ECAMPUS_TOKEN": TOKEN} | env,
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def runs(self) -> list[tuple[int, str]]:
        """(run id, outcome) of every finished run, from reconcile's one line per run."""
        found = []
        for r in self.records():
            m = re.match(r"run (\d+) outcome=(\w+)", r.get("msg", ""))
            if m and r.get("logger") == "groupsync.run":
                found.append((int(m.group(1)), m.group(2)))
        return found

    def last_run_id(self) -> int:
        runs = self.runs()
        return runs[-1][0] if runs else 0

    def _read_notifications(self) -> None:
        while self._reading:
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.split("\n")))

    def notifications(self) -> list[dict[str, str]]:
        return self.messages

    def wait_for(
        self, check: Callable[[], T | None], what: str, timeout: float = RUN_TIMEOUT_S
    ) -> T:
        def alive_check() -> T | None:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                pytest.fail(
                    f"daemon exited ({code}) while waiting for {what}\n"
                    f"--- daemon log ---\n{self.log_tail()}"
                )
            return check()

        return wait_until(alive_check, timeout, what, self.log_tail)

    def wait_run(self, outcome: str, after: int = 0, timeout: float = RUN_TIMEOUT_S) -> int:
        def check() -> int | None:
            return next((i for i, o in self.runs() if i > after and o == outcome), None)

        return self.wait_for(check, f"a run after #{after} with outcome {outcome}", timeout)

    def wait_log(
        self, pattern: str, logger: str | None = None, timeout: float = RUN_TIMEOUT_S
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            return next(
                (
                    r
                    for r in self.records()
                    if re.search(pattern, r.get("msg", "")) and logger in (None, r.get("logger"))
                ),
                None,
            )

        return self.wait_for(check, f"a log line matching {pattern!r}", timeout)

    def said(self, pattern: str) -> bool:
        """Whether a log line matches `pattern`: for a daemon that has exited."""
        return any(re.search(pattern, r.get("msg", "")) for r in self.records())

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running {timeout:.0f}s later\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log_text().splitlines()[-40:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reading = False
        self._reader.join(timeout=5)
        self.notify.close()
        self._sockdir.cleanup()


class Setup:
    """A work directory with config, spec and journal, an emulator, and daemons to start."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.spec_file = tmp_path / "spec" / "groups.yaml"
        self.spec_file.parent.mkdir()
        self.spec_file.write_text(SPEC)
        self.journal = tmp_path / "journal.db"
        self.metrics_port = free_port()
        self.emulator = RestartableEmulator(tmp_path / "emulator.db")
        self.daemons: list[DaemonProcess] = []
        self.config = tmp_path / "groupsync.yaml"

    def write_config(
        self,
        *,
        extra_api: str = "",
        schedule: str = "every: 1s",
        journal: str = "journal.db",
        listen: str | None = None,
    ) -> Path:
        listen = listen or f"127.0.0.1:{self.metrics_port}"
        self.config.write_text(
            f"""\
api:
  base_url: {self.emulator.base_url}
  timeout_s: 5
  max_requests_per_s: 200
{extra_api}spec:
  path: spec
schedule:
  {schedule}
  jitter: 0s
journal:
  path: {journal}
log:
  format: json
metrics:
  listen: {listen}
"""
        )
        return self.config

    def start(
        self, *args: str, env: dict[str, str] | None = None, config: Path | None = None
    ) -> DaemonProcess:
        if not self.config.exists():
            self.write_config()
        daemon = DaemonProcess(self.dir, config or self.config, *args, env=env or {})
        self.daemons.append(daemon)
        return daemon

    def once(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if not self.config.exists():
            self.write_config()
        return subprocess.run(
            [sys.executable, "-m", "groupsync", "run", "--once", "--config", str(self.config)],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ | {"ECAMPUS_TOKEN": TOKEN},
            check=False,
        )

    def pending_rows(self) -> int:
        return self.statuses().get("pending", 0)

    def statuses(self) -> dict[str, int]:
        """How many journaled changes have each status; none while the daemon has not yet made
        the journal or its tables (it creates the file first, then migrates it)."""
        if not self.journal.exists():
            return {}
        with contextlib.closing(sqlite3.connect(self.journal)) as db:
            made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'changes'").fetchone()
            if made is None:
                return {}
            return dict(db.execute("SELECT status, count(*) FROM changes GROUP BY status"))

    def metrics(
        self, port: int | None = None
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        r = httpx.get(
            f"http://127.0.0.1:{port or self.metrics_port}/metrics", timeout=5, verify=False
        )
        assert r.status_code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }

    def healthz(self, port: int | None = None) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{port or self.metrics_port}/healthz", timeout=5, verify=False
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    s.emulator.start()
    try:
        yield s
    finally:
        for d in s.daemons:
            d.close()
        s.emulator.stop()


def converged(s: Setup) -> bool:
    groups = s.emulator.by_name()
    chess, go = groups.get("Chess Club"), groups.get("Go Club")
    return bool(
        chess
        and go
        and {c["username"] for c in chess["contacts"]} == {"ada", "bob"}
        and go["description"] == "Weekly games."
    )


@pytest.mark.slow
def test_converges_at_start_puts_back_drift_and_stops_cleanly(setup: Setup) -> None:
    d = setup.start(env={"WATCHDOG_USEC": "2000000"})
    first = d.wait_run("applied")
    assert converged(setup)
    changes = [r["msg"] for r in d.records() if r.get("logger") == "groupsync.change"]
    assert sorted(changes) == ["applied create chess", "applied create go"]
    assert d.wait_for(lambda: any(m.get("READY") == "1" for m in d.notifications()), "READY=1")

    # Someone renames a group and drops a member by hand: the next tick puts it back.
    assert setup.emulator.emu is not None
    chess = setup.emulator.by_name()["Chess Club"]
    setup.emulator.emu.state.update_group(
        chess["id"], {"name": "Chess Klub", "contacts": [{"username": "ada"}]}
    )
    d.wait_run("applied", after=first)
    assert converged(setup)
    assert "Chess Klub" not in setup.emulator.by_name()

    # A quiet tick after that is a no-op.
    d.wait_run("noop", after=first)
    notes = d.notifications()
    assert any(m.get("STATUS", "").startswith("last run") for m in notes)
    assert sum(1 for m in notes if m.get("WATCHDOG") == "1") >= 2  # every 1 s (half of 2 s)

    m = setup.metrics()
    assert m[("groupsync_runs_total", (("outcome", "applied"),))] >= 2
    assert m[("groupsync_runs_total", (("outcome", "noop"),))] >= 1
    assert m[("groupsync_changes_total", (("action", "create"), ("outcome", "applied")))] == 2
    assert m[("groupsync_changes_total", (("action", "update"), ("outcome", "applied")))] >= 1
    assert m[("groupsync_last_success_timestamp_seconds", ())] > 0
    assert m[("groupsync_run_duration_seconds_count", ())] >= 3
    assert m[("groupsync_api_requests_total", (("method", "GET"), ("status", "200")))] >= 3
    assert m[("groupsync_api_requests_total", (("method", "POST"), ("status", "201")))] == 2
    assert setup.healthz().status_code == 200

    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert any(m.get("STOPPING") == "1" for m in d.notifications())
    assert setup.pending_rows() == 0


@pytest.mark.slow
def test_reload_keeps_the_last_good_spec_then_applies_a_good_one(setup: Setup) -> None:
    d = setup.start()
    d.wait_run("applied")
    d.notifications()
    d.messages.clear()

    # Meanwhile a second run on the same journal gives up at once.
    r = setup.once(timeout=30)
    assert r.returncode == 1
    assert "another groupsync" in r.stderr

    # A broken spec (unknown field on line 4): refused at reload, the old spec keeps running.
    setup.spec_file.write_text(SPEC.replace("    members: [ada, bob]", "    membrs: [ada, bob]"))
    d.signal(signal.SIGHUP)
    line = d.wait_log(r"reload refused")
    assert re.search(r"groups\.yaml:4", line["msg"]), line
    after_bad = d.wait_run("noop", after=d.last_run_id())
    assert converged(setup)
    notes = d.notifications()
    kinds = [next(iter(m)) for m in notes if "RELOADING" in m or "READY" in m]
    assert kinds[:2] == ["RELOADING", "READY"]
    assert int(next(m for m in notes if "RELOADING" in m)["MONOTONIC_USEC"]) > 0

    # A good edit: renamed, and a new group.
    setup.spec_file.write_text(
        SPEC.replace("Go Club", "Go & Baduk Club") + "  film:\n    name: Film Society\n"
    )
    d.signal(signal.SIGHUP)
    d.wait_log(r"^reloaded")
    d.wait_run("applied", after=after_bad)
    names = set(setup.emulator.by_name())
    assert {"Chess Club", "Go & Baduk Club", "Film Society"} <= names
    assert "Go Club" not in names
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


@pytest.mark.slow
def test_a_refused_token_is_loud_backs_off_and_a_reload_fixes_it(setup: Setup) -> None:
    token_file = setup.dir / "token"
    token_file.write_text("wrong-token\n")
    token_file.chmod(0o600)
    setup.write_config(extra_api=f"  token_env: null\n  token_file: {token_file}\n")
    d = setup.start()
    first = d.wait_run("error")
    d.wait_log("REFUSED THE TOKEN")
    d.wait_log(
        r"^1 failed run in a row; next attempt at the next scheduled run \(\d\d:\d\d:\d\dZ\)"
    )
    d.wait_log(r"^2 failed runs in a row; next attempt at \d\d:\d\d:\d\dZ, after skipping 1 ")
    d.wait_log(r"tick skipped: backing off")
    assert "tick(s)" not in d.log_text()
    assert setup.healthz().status_code == 503
    assert "wrong-token" not in d.log_text()
    assert setup.emulator.by_name() == {}

    token_file.write_text(TOKEN + "\n")
    d.signal(signal.SIGHUP)
    d.wait_run("applied", after=first)
    assert converged(setup)
    assert setup.healthz().status_code == 200
    assert TOKEN not in d.log_text()
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def start_a_slow_apply(setup: Setup, latency_s: float) -> DaemonProcess:
    """A daemon applying eight creates one at a time, every request taking `latency_s`; returned
    once the first create is in flight (journaled `pending`, its answer not back yet)."""
    many = "groups:\n" + "".join(f"  g{i}:\n    name: Group {i}\n" for i in range(8))
    setup.spec_file.write_text(many)
    setup.write_config(extra_api="  max_concurrency: 1\n")  # timeout_s 5: the grace
    assert setup.emulator.emu is not None
    setup.emulator.emu.faults.update(latency_s=latency_s)
    d = setup.start()
    d.wait_for(lambda: setup.pending_rows() == 1, "the first create in flight")
    return d


@pytest.mark.slow
def test_sigterm_lets_the_change_in_flight_finish_starts_no_more_and_exits_zero(
    setup: Setup,
) -> None:
    d = start_a_slow_apply(setup, latency_s=1.0)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=15) == 0
    assert d.said(r"^SIGTERM: starting no more changes; the ones in flight get 5s to finish")
    assert [o for _, o in d.runs()] == ["interrupted"]
    assert setup.statuses() == {"applied": 1, "skipped": 7}
    assert setup.pending_rows() == 0
    assert len(setup.emulator.by_name()) == 1
    assert "cancelling it" not in d.log_text()  # the last resort was not needed
    assert "failed run" not in d.log_text()  # a stop asked for is no failure to back off from


@pytest.mark.slow
def test_a_second_signal_abandons_the_change_in_flight_and_the_next_start_settles_it(
    setup: Setup,
) -> None:
    d = start_a_slow_apply(setup, latency_s=2.0)
    d.signal(signal.SIGTERM)
    d.wait_log(r"^SIGTERM: starting no more changes")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=15) == 0
    assert d.said(r"^SIGTERM again: abandoning the changes in flight now")
    assert [o for _, o in d.runs()] == ["interrupted"]
    assert setup.statuses() == {"unknown": 1, "skipped": 7}  # sent, answer never seen

    assert setup.emulator.emu is not None
    setup.emulator.emu.faults.update(latency_s=0)
    r = setup.once()
    assert r.returncode == 0, r.stderr
    assert setup.pending_rows() == 0
    names = [g["name"] for g in setup.emulator.emu.state.groups()]
    assert sorted(names) == sorted(f"Group {i}" for i in range(8))  # the abandoned one once


@pytest.mark.slow
def test_once_exit_codes_and_a_refused_plan_logged_every_run(setup: Setup) -> None:
    setup.spec_file.write_text(SPEC + "  film:\n    name: Film\n  drama:\n    name: Drama\n")
    r = setup.once()
    assert r.returncode == 0, r.stderr
    # Dropping 3 of 4 managed groups would archive them: over the safety limit.
    setup.spec_file.write_text(SPEC.split("  go:")[0])
    r = setup.once()
    assert r.returncode == 3, r.stderr
    assert "REFUSED" in r.stderr

    d = setup.start()
    first = d.wait_run("refused")
    d.wait_run("refused", after=first)
    refusals = [r for r in d.records() if "REFUSED" in r.get("msg", "")]
    assert len(refusals) >= 2
    # The reason is said once per run, on the run's line, not again on the REFUSED line.
    records = d.records()
    reasons = [r for r in records if "would archive 3 of 4" in r.get("msg", "")]
    assert len(reasons) == sum("outcome=refused" in r.get("msg", "") for r in records)
    assert setup.healthz().status_code == 503
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert len(setup.emulator.by_name()) == 4
    assert all(g["archived_at"] is None for g in setup.emulator.by_name().values())


@pytest.mark.slow
def test_a_replaced_journal_folder_never_makes_two_writers(setup: Setup) -> None:
    """The attack: `rm -rf` + `mkdir` of the journal's folder under a running daemon, a second
    daemon on the same config, a new key, SIGHUP to both. One writer; one group for the key."""
    state = setup.dir / "state"
    state.mkdir()
    config = setup.write_config(journal="state/journal.db")
    # The same config but for the metrics port, which only one process can listen on.
    b_port = free_port()
    config_b = setup.dir / "groupsync-b.yaml"
    config_b.write_text(config.read_text().replace(f":{setup.metrics_port}", f":{b_port}"))
    a = setup.start()
    a.wait_run("applied")
    # Frozen, A cannot notice anything before B holds the new journal: the order the attack
    # needs, every time.
    a.signal(signal.SIGSTOP)
    runs_before = len(a.runs())
    shutil.rmtree(state)
    state.mkdir()
    b = setup.start(config=config_b)
    b.wait_for(lambda: b.runs(), "the second daemon's first run")
    a.signal(signal.SIGCONT)
    a.wait_log(r"was deleted or replaced under this process")
    a.wait_log(r"stays a non-writer until it is restarted")
    crit = [r for r in a.records() if r.get("level") == "critical"]
    assert any("was deleted or replaced" in r["msg"] for r in crit)

    setup.spec_file.write_text(SPEC + "  d1:\n    name: D One\n")
    a.signal(signal.SIGHUP)
    b.signal(signal.SIGHUP)
    b.wait_log(r"^applied create d1$", logger="groupsync.change")
    a.wait_log(r"^reloaded")
    b.wait_run("noop", after=b.last_run_id())  # B went on; A had the ticks to try too
    groups = [g["name"] for g in setup.emulator.emu.state.groups()]  # type: ignore[union-attr]
    assert groups.count("D One") == 1
    assert sorted(groups) == ["Chess Club", "D One", "Go Club"]

    # A wrote nothing after the replacement: no change, and at most the run it was frozen in.
    assert len(a.runs()) <= runs_before + 1
    assert all(o != "applied" for _, o in a.runs()[runs_before:])
    changes_a = [r for r in a.records() if r.get("logger") == "groupsync.change"]
    assert len(changes_a) == 2  # the two creates of its first run
    health = setup.healthz()
    assert health.status_code == 503
    assert "another process holds the new one" in health.text
    assert setup.metrics()[("groupsync_journal_writer", ())] == 0
    assert setup.metrics(b_port)[("groupsync_journal_writer", ())] == 1
    with contextlib.closing(sqlite3.connect(state / "journal.db")) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM groups")}
    assert keys == {"chess", "go", "d1"}
    for d in (a, b):
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0


@pytest.mark.slow
def test_a_burst_of_sighups_reloads_a_few_times_and_never_delays_sigterm(setup: Setup) -> None:
    """50 SIGHUPs within a second while each load takes a while (a 3,000-group spec, already
    applied): the loads fold into a few, and SIGTERM is handled at once."""
    assert setup.emulator.emu is not None
    spec = "groups:\n"
    for i in range(3000):
        spec += f"  g{i}:\n    name: Group {i}\n    description: Group {i} of a big spec.\n"
        setup.emulator.emu.state.add_group(f"Group {i}", description=f"Group {i} of a big spec.")
    setup.spec_file.write_text(spec)
    d = setup.start()
    d.wait_run("applied")  # adopted, by name
    for _ in range(50):
        d.signal(signal.SIGHUP)
        time.sleep(0.02)  # paced: signals sent at once would merge in the kernel
    sent = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=10) == 0
    assert time.monotonic() - sent < 2.0, d.log_tail()
    reloads = [r for r in d.records() if r.get("msg", "").startswith("reloaded")]
    assert 1 <= len(reloads) <= 3, len(reloads)


def test_startup_with_an_invalid_config_exits_1_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "groupsync.yaml"
    config.write_text("spec:\n  path: spec\nschedule:\n  evry: 5m\n")
    r = subprocess.run(
        [sys.executable, "-m", "groupsync", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1
    assert re.search(r"groupsync\.yaml:4:\d+", r.stderr), r.stderr
