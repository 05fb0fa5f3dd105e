"""Spec + roster -> plan -> apply against the emulator over HTTP, through the CLI's entry point
(`groupsync.cli.main`, in this process), and the daemon re-reading rosters on every run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon_support import reconcile_now
from groupsync.config import load_settings
from groupsync.daemon import Daemon, Loaded
from groupsync.emulator import Emulator
from groupsync.sdnotify import Notifier
from groupsync.secret import Secret
from groupsync.spec import load_spec
from groupsync.writer import JournalSeat
from helpers import emulator_config, run_cli
from roster_export import add_row, copy_example, drop, edit, read_rows, write_rows

TOKEN = "test-token"
STAFF = ["prof.ada", "prof.alan", "prof.barbara", "ta.grace"]
USERS = [
    *STAFF,
    *("amara", "bilal", "cedric", "chen.wei", "cliff", "dmitri", "elif", "farah", "gustavo"),
    *("hana", "hector", "hester", "ines", "jonas", "kwame", "leila", "mateo", "nadia", "oskar"),
    *("priya", "rosa", "yuki"),
]
WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Campus:
    emu: Emulator
    config: Path
    spec: Path

    def export(self, name: str) -> Path:
        return self.spec.parent / "export" / f"{name}.csv"

    def run(self, *args: str) -> Any:
        return run_cli(*args, "--config", str(self.config), token=TOKEN)

    def plan(self) -> dict[str, Any]:
        result = self.run("plan", "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["plan"]

    def apply(self) -> None:
        result = self.run("apply", "--yes")
        assert result.returncode == 0, result.stdout + result.stderr

    def group(self, name: str) -> dict[str, Any]:
        [found] = [g for g in self.emu.state.groups() if g["name"] == name]
        return found

    def members(self, name: str) -> set[str]:
        return {c["username"] for c in self.group(name)["contacts"]}

    def writes(self) -> int:
        return sum(self.emu.count(method=m) for m in WRITES)


@pytest.fixture
def campus(tmp_path: Path, emulator: Emulator) -> Iterator[Campus]:
    """examples/roster applied once to an empty account holding its users as contacts."""
    for user in USERS:
        emulator.state.add_contact(user)
    spec = copy_example(tmp_path)
    campus = Campus(emulator, emulator_config(tmp_path, emulator.base_url, spec), spec)
    campus.apply()
    assert len(emulator.state.groups()) == 4
    yield campus


def only_change(plan: dict[str, Any]) -> dict[str, Any]:
    assert not plan["errors"] and not plan["refusals"], plan
    [change] = plan["changes"]
    return change


def test_add_drop_gives_exactly_those_member_changes(campus: Campus) -> None:
    enrollments = campus.export("enrollments")
    for user in ("u004", "u005", "u006"):  # amara, bilal, cedric drop BIO110
        assert drop(enrollments, {"classSourcedId": "c-bio110", "userSourcedId": user}) == 1
    for n, user in enumerate(("u024", "u025")):  # rosa and yuki add it
        add_row(
            enrollments,
            sourcedId=f"add{n}",
            status="active",
            classSourcedId="c-bio110",
            userSourcedId=user,
            role="student",
        )
    change = only_change(campus.plan())
    assert (change["key"], change["action"]) == ("class-bio110", "update")
    assert change["members_add"] == ["rosa", "yuki"]
    assert change["members_remove"] == ["amara", "bilal", "cedric"]
    assert change["fields"] == []
    before = campus.members("Introduction to Biology (BIO110)")
    campus.apply()
    after = campus.members("Introduction to Biology (BIO110)")
    assert after == before - {"amara", "bilal", "cedric"} | {"rosa", "yuki"}
    assert campus.plan()["changes"] == []


def test_retitled_class_keeps_its_group_deleted_class_is_archived_disabled_user_removed(
    campus: Campus,
) -> None:
    bio = campus.group("Introduction to Biology (BIO110)")
    edit(campus.export("classes"), {"classCode": "BIO110"}, title="Biology I")
    change = only_change(campus.plan())
    assert (change["action"], change["group_id"]) == ("update", bio["id"])
    assert [(f["field"], f["new"]) for f in change["fields"]] == [("name", "Biology I (BIO110)")]
    campus.apply()
    assert campus.group("Biology I (BIO110)")["id"] == bio["id"]

    hist = campus.group("Modern History (HIST210)")
    edit(campus.export("classes"), {"classCode": "HIST210"}, status="tobedeleted")
    change = only_change(campus.plan())
    assert (change["action"], change["group_id"], change["set_archived"]) == (
        "archive",
        hist["id"],
        True,
    )
    assert change["members_remove"] == []
    campus.apply()
    assert campus.group("Modern History (HIST210)")["archived_at"] is not None

    edit(campus.export("users"), {"username": "amara"}, enabledUser="false")
    change = only_change(campus.plan())
    assert (change["key"], change["members_remove"]) == ("class-bio110", ["amara"])
    campus.apply()
    assert "amara" not in campus.members("Biology I (BIO110)")

    history = campus.run("history", "--limit", "4")
    assert history.stdout.count("roster sis (oneroster, digest ") == 4
    digests = {
        line.split("digest ")[1][:12]
        for line in history.stdout.splitlines()
        if "roster sis" in line
    }
    assert len(digests) == 4  # a different export at every run


def test_a_truncated_enrollments_file_is_refused_with_exit_3_and_no_writes(campus: Campus) -> None:
    enrollments = campus.export("enrollments")
    header, rows = read_rows(enrollments)
    write_rows(enrollments, header, rows[: len(rows) * 4 // 10])  # the last 60% gone
    campus.emu.reset_counters()
    plan = campus.run("plan")
    assert plan.returncode == 3, plan.stdout + plan.stderr
    result = campus.run("apply", "--yes")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "roster sis yields 14 members, 40% of the 35 at the last applied run (< 50%," in (
        result.stderr
    )
    assert campus.writes() == 0
    forced = campus.run("apply", "--yes", "--force")  # the operator says it is real
    assert forced.returncode == 0, forced.stderr
    assert campus.writes() > 0


def test_csv_roster_mixed_with_usernames_and_sets(campus: Campus) -> None:
    campus.spec.write_text(
        campus.spec.read_text()
        .replace('["@clubs:debate", ta.grace]', '["@clubs:debate", ta.grace, "@coaches"]')
        .replace("groups:\n", "member_sets:\n  coaches: [prof.alan, hester]\n\ngroups:\n")
    )
    with campus.spec.parent.joinpath("clubs.csv").open("a") as f:
        f.write("debate,leila,\nchess,oskar,\n")
    change = only_change(campus.plan())
    assert (change["key"], change["members_add"]) == ("debate", ["hester", "leila", "prof.alan"])
    campus.apply()
    assert campus.members("Debate Society") == {
        "amara",
        "bilal",
        "kwame",
        "rosa",
        "yuki",
        "ta.grace",
        "prof.alan",
        "hester",
        "leila",
    }


@pytest.mark.anyio
async def test_the_daemon_reads_the_rosters_again_at_every_run(
    tmp_path: Path, emulator: Emulator
) -> None:
    for user in USERS:
        emulator.state.add_contact(user)
    spec_path = copy_example(tmp_path)
    config = emulator_config(tmp_path, emulator.base_url, spec_path)
    settings = load_settings(config)
    seat = JournalSeat.take(settings.journal.path)
    try:
        loaded = Loaded(settings, load_spec(spec_path), Secret(TOKEN))
        daemon = Daemon(config, loaded, seat, notifier=Notifier({}))
        first = await reconcile_now(daemon)
        assert first is not None and first.outcome == "applied"
        drop(spec_path.parent / "export" / "enrollments.csv", {"userSourcedId": "u004"})
        second = await reconcile_now(daemon)  # no SIGHUP, no reload
        assert second is not None and second.outcome == "applied"
        [bio] = [g for g in emulator.state.groups() if g["name"].endswith("(BIO110)")]
        assert "amara" not in {c["username"] for c in bio["contacts"]}
        (spec_path.parent / "export" / "users.csv").write_text("not,a\nroster\n")
        third = await reconcile_now(daemon)
        assert third is not None and (third.outcome, third.failure) == ("error", "roster")
        [run] = seat.journal.history(limit=1)
        assert run.id == second.run_id and len(run.rosters) == 2
    finally:
        seat.release()
