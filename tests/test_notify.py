"""notify: the messages groupsync posts, against the emulator over HTTP with a real journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from groupsync.api import Client, ReadOnlyViolation
from groupsync.config import Settings, load_settings
from groupsync.emulator import Emulator
from groupsync.journal import Journal
from groupsync.notify import MAX_MESSAGE, Notify
from groupsync.outbox import Courier
from groupsync.outcomes import MessageStatus, RunOutcome
from groupsync.reconcile import RunOptions, RunReport, Session
from groupsync.render import render_json, render_markdown, render_text
from groupsync.secret import Secret
from groupsync.spec import SpecError, load_spec
from helpers import run_cli

pytestmark = pytest.mark.anyio
TOKEN = Secret("test-token")
NOTIFY = {
    "admin_group": "admins",
    "welcome": "Welcome to {name}! {members} joined ({count}).",
    "on_archive": "{name} is being archived: {reason}",
    "on_restore": "{name} is open again.",
    "on_rename": "This group is now called {name} (was {old_name}).",
}


class Campus:
    """A spec file, a config and a journal against one emulator; `run` applies the spec."""

    def __init__(self, tmp_path: Path, emu: Emulator, **api: Any) -> None:
        self.tmp_path, self.emu = tmp_path, emu
        self.config = tmp_path / "groupsync.yaml"
        settings = {
            "api": {"base_url": emu.base_url, "max_requests_per_s": 200, **api},
            "spec": {"path": "spec.yaml"},
            "journal": {"path": "journal.db"},
        }
        self.config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        self.settings: Settings = load_settings(self.config)

    def write(self, groups: dict[str, Any], notify: dict[str, Any] | None = None) -> None:
        doc: dict[str, Any] = {"groups": groups}
        if notify is not None:
            doc["notify"] = notify
        (self.tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")

    async def run(self) -> RunReport:
        with Journal.open(self.settings.journal.path) as journal:
            session = Session(self.settings, TOKEN, journal)
            options = RunOptions(trigger="test", spec_source=(None, None))
            return await session.reconcile(load_spec(self.settings.spec.path), options)

    def chat(self, name: str) -> list[str]:
        """What the group named `name` shows, read through /_admin like a person would."""
        groups = self.emu.state.groups(archived=False) + self.emu.state.groups(archived=True)
        [group] = [g for g in groups if g["name"] == name]
        answer = httpx.get(
            f"{self.emu.admin_url}/messages",
            params={"conversation_id": group["conversation_id"]},
            headers={"Authorization": "Bearer test-admin-token"},
            verify=False,
        )
        return [m["message"] for m in answer.json()["data"]]

    def outbox(self) -> list[tuple[str, str, str]]:
        with Journal.open(self.settings.journal.path) as journal:
            return [
                (m.key, m.kind, m.status)
                for run in reversed(journal.history(limit=100))
                for m in run.messages
            ]


@pytest.fixture
def campus(emulator: Emulator, tmp_path: Path) -> Campus:
    for user in ("ada", "alan", "grace", "linus", "ines", "root"):
        emulator.state.add_contact(user)
    return Campus(tmp_path, emulator)


ADMINS = {"name": "Admins", "members": ["root"]}
QUIET = {k: v for k, v in NOTIFY.items() if k != "admin_group"}  # no run summaries


async def test_welcome_rename_archive_and_restore_notices_reach_the_right_chats(
    campus: Campus,
) -> None:
    groups: dict[str, Any] = {
        "admins": ADMINS,
        "cs101": {"name": "CS 101", "members": ["ada", "alan"]},
        "club": {"name": "Club"},
    }
    campus.write(groups, NOTIFY)
    assert (await campus.run()).outcome is RunOutcome.APPLIED
    assert campus.chat("CS 101") == ["Welcome to CS 101! @ada and @alan joined (2)."]
    assert campus.chat("Club") == []  # membership not managed: nobody to welcome

    groups["cs101"] = {"name": "CS 101 (Fall)", "members": ["ada", "alan", "grace"]}
    groups["club"]["archived"] = True
    campus.write(groups, NOTIFY)
    assert (await campus.run()).outcome is RunOutcome.APPLIED
    assert campus.chat("CS 101 (Fall)")[1:] == [
        "Welcome to CS 101 (Fall)! @grace joined (1).",
        "This group is now called CS 101 (Fall) (was CS 101).",
    ]
    assert campus.chat("Club") == ["Club is being archived: archived: true in the spec"]

    groups["club"]["archived"] = False
    del groups["cs101"]
    campus.write(groups, NOTIFY)
    assert (await campus.run()).outcome is RunOutcome.APPLIED
    assert campus.chat("Club")[1:] == ["Club is open again."]
    # A removed key's group: the notice goes out before the archive, which a chat refuses after.
    assert campus.chat("CS 101 (Fall)")[-1] == (
        "CS 101 (Fall) is being archived: removed from the spec"
    )
    welcome, *summaries = campus.chat("Admins")
    assert welcome == "Welcome to Admins! @root joined (1)."
    assert [s.splitlines()[0] for s in summaries] == [
        f"groupsync run {i}: applied" for i in (1, 2, 3)
    ]
    assert summaries[1].splitlines()[1:] == ["1 updated, 1 archived", "Changed: cs101, club"]


async def test_thirty_additions_make_one_welcome(campus: Campus) -> None:
    users = [f"student{i:02}" for i in range(30)]
    for user in users:
        campus.emu.state.add_contact(user)
    campus.write({"cs101": {"name": "CS 101", "members": ["ada"]}}, QUIET)
    await campus.run()
    campus.write({"cs101": {"name": "CS 101", "members": ["ada", *users]}}, QUIET)
    await campus.run()
    [_, welcome] = campus.chat("CS 101")
    assert welcome.startswith("Welcome to CS 101! @student00, @student01")
    assert welcome.endswith("@student19 and 10 more joined (30).")


async def test_an_adoption_and_a_drift_re_add_welcome_nobody(campus: Campus) -> None:
    campus.emu.state.add_group("Existing", members=["ada"])
    spec = {"existing": {"name": "Existing", "members": ["ada", "alan"]}}
    campus.write(spec, QUIET)
    report = await campus.run()
    assert report.plan is not None and report.plan.messages == ()  # adopted, though it adds
    assert campus.chat("Existing") == []

    [group] = campus.emu.state.groups(archived=False)
    campus.emu.state.update_group(group["id"], {"contacts": [{"username": "ada"}]})  # by hand
    report = await campus.run()
    assert report.plan is not None and [c.cause for c in report.plan.changes] == ["drift"]
    assert report.plan.messages == () and campus.chat("Existing") == []


async def test_a_repeated_refusal_is_posted_once_then_resolved(campus: Campus) -> None:
    groups = {"admins": ADMINS} | {f"g{i}": {"name": f"G{i}"} for i in range(4)}
    campus.write(groups, NOTIFY)
    await campus.run()
    campus.write({"admins": ADMINS}, NOTIFY)  # archiving 4 of 5: over the limit
    for _ in range(3):
        assert (await campus.run()).outcome is RunOutcome.REFUSED
    campus.write(groups, NOTIFY)  # put back: nothing to do, the refusal is gone
    assert (await campus.run()).outcome is RunOutcome.NOOP
    assert (await campus.run()).outcome is RunOutcome.NOOP
    _, *summaries = campus.chat("Admins")
    assert [s.splitlines()[0] for s in summaries] == [
        "groupsync run 1: applied",
        "groupsync run 2: refused",
        "groupsync run 5: resolved",
    ]
    assert "- refused: would archive 4 of 5" in summaries[1] and summaries[2].endswith(
        summaries[1].splitlines()[-1]
    )


async def test_the_4000_character_cap_holds(campus: Campus) -> None:
    long = {"welcome": "x" * 3990 + " {members}"}
    users = ["ada", "alan", "grace", "linus", "ines"]
    campus.write({"cs101": {"name": "CS 101", "members": users}}, long)
    report = await campus.run()
    assert report.plan is not None
    [message] = report.plan.messages
    [text] = campus.chat("CS 101")
    assert len(text) == MAX_MESSAGE and text.endswith("…") and message.text == text


async def test_a_key_in_error_posts_nothing(campus: Campus) -> None:
    campus.write({"cs101": {"name": "CS 101", "members": ["ada", "nobody"]}}, QUIET)
    report = await campus.run()
    assert report.outcome is RunOutcome.FAILED  # "nobody" is no contact
    assert campus.emu.state.messages() == []


def test_bad_templates_and_admin_group_fail_validate_at_file_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "notify:\n"
        "  admin_group: admin\n"
        '  welcome: "Hi {nmae}"\n'
        '  on_rename: "{name.upper} {old_name!r}"\n'
        "groups:\n"
        "  admins: {name: Admins}\n"
        "  cs101:\n"
        "    name: CS\n"
        '    notify: {welcome: null, on_restore: "{reason}", on_archive: "{0}"}\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        "spec.yaml:2:16: notify.admin_group: admin_group 'admin' is not a group key of this"
        " spec (did you mean 'admins'?)"
    )
    assert lines[1].startswith("spec.yaml:3:12: notify.welcome: {nmae} is not a field of welcome")
    assert lines[2].startswith("spec.yaml:4:14: notify.on_rename: {name.upper} is not a field")
    assert lines[3].startswith("spec.yaml:9:41: groups.cs101.notify.on_restore: {reason} is not")
    assert lines[4].startswith("spec.yaml:9:65: groups.cs101.notify.on_archive: {0} is not a")


def test_a_template_longer_than_a_message_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"notify": {"welcome": "x" * 4001}, "groups": {}}), encoding="utf-8"
    )
    with pytest.raises(SpecError, match="4001 characters of text; a message holds at most 4,000"):
        load_spec(spec)


def _no_duplicates(emu: Emulator) -> Counter[tuple[str, str]]:
    said = Counter((m["conversation_id"], m["message"]) for m in emu.state.messages())
    return Counter({k: n for k, n in said.items() if n > 1})


@pytest.mark.slow
async def test_fault_mixes_give_no_duplicate_and_no_message_for_a_failed_change(
    campus: Campus,
) -> None:
    users = [f"s{i:03}" for i in range(200)]
    for user in users:
        campus.emu.state.add_contact(user)
    campus.write(
        {f"g{i:03}": {"name": f"G{i:03}", "members": [users[i]]} for i in range(200)},
        {"welcome": "Welcome {members}"},
    )
    campus.emu.faults.update(
        seed=14, error_fraction=0.2, ambiguous_fraction=0.05, ambiguous_mode="random"
    )
    campus.emu.faults.update(rate_limit_per_s=150.0)  # and some 429s
    for _ in range(4):  # failed creates are retried by the next runs
        await campus.run()
    campus.emu.faults.update(error_fraction=0.0, ambiguous_fraction=0.0)
    await campus.run()
    messages = campus.emu.state.messages()
    assert _no_duplicates(campus.emu) == Counter()
    assert len({m["conversation_id"] for m in messages}) == len(messages)  # one per group
    with Journal.open(campus.settings.journal.path) as journal:
        runs = journal.history(limit=10)
    assert len(campus.emu.state.groups(archived=False)) == 200
    applied = {(c.run_id, c.key) for r in runs for c in r.changes if c.status == "applied"}
    rows = [m for r in runs for m in r.messages]
    sent = [m for m in rows if m.status is MessageStatus.SENT]
    maybe = [m for m in rows if m.status is MessageStatus.UNKNOWN]
    assert len(sent) <= len(messages) <= len(sent) + len(maybe)
    assert all((m.run_id, m.key) in applied for m in rows if m.status != MessageStatus.SKIPPED)
    assert any(m.status is MessageStatus.SKIPPED for m in rows)  # failed creates: not welcomed
    assert len(sent) + len(maybe) >= 150, Counter(m.status for m in rows)


def _round(campus: Campus, i: int) -> None:
    """Round `i` of the spec: every group renamed and one member more, some archived or back;
    the templates name the round, so a message posted twice shows as the same text twice."""
    groups = {
        f"g{k:02}": {
            "name": f"G{k:02} r{i}",
            "members": ["ada", *(f"u{j:02}" for j in range(i + 1))],
            "archived": k < 5 and i % 2 == 1,  # within max_archive_fraction
        }
        for k in range(24)
    }
    notify = {kind: f"r{i} {kind}: {{name}}" for kind in ("on_archive", "on_restore", "on_rename")}
    campus.write(groups, notify | {"welcome": f"r{i} welcome {{members}}"})


@pytest.mark.slow
def test_twenty_applies_killed_and_resumed_post_no_message_twice(campus: Campus) -> None:
    for j in range(21):
        campus.emu.state.add_contact(f"u{j:02}")
    config = yaml.safe_load(campus.config.read_text(encoding="utf-8"))
    config["api"] |= {"max_requests_per_s": 100, "max_concurrency": 4}
    campus.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    campus.emu.faults.update(latency_s=0.02)
    env = {k: v for k, v in os.environ.items() if k != "GROUPSYNC_CONFIG"}
    env |= {"ECAMPUS_TOKEN": "test-token", "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "groupsync", "apply", "--yes", "--config", str(campus.config)]
    killed_mid_run = 0
    for i in range(20):
        _round(campus, i)
        child = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # Kill at a different point each round: past the interpreter's start (~0.45 s),
            # inside a round's 6-10 s of writes and messages.
            child.wait(timeout=0.6 + 0.08 * (i % 8))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            killed_mid_run += 1
        # The resumed apply, in this process: only the one killed needs to be a process.
        resumed = run_cli("apply", "--yes", "--config", str(campus.config), token="test-token")
        assert resumed.returncode == 0, resumed.stderr
    assert killed_mid_run >= 15
    assert _no_duplicates(campus.emu) == Counter()
    statuses = Counter(status for _, _, status in campus.outbox())
    assert statuses[MessageStatus.SENT] > 100, statuses


async def test_the_plan_lists_messages_in_every_format_outside_the_checksum(
    campus: Campus,
) -> None:
    campus.write({"cs101": {"name": "CS 101", "members": ["ada", "alan", "grace"]}}, QUIET)
    spec = load_spec(campus.tmp_path / "spec.yaml")
    session = Session(campus.settings, TOKEN)
    planned = await session.plan(spec)
    silent = await session.plan(replace(spec, notify=Notify()))
    plan = planned.plan
    assert plan.checksum == silent.plan.checksum and silent.plan.messages == ()
    assert [(m.key, m.kind, m.count) for m in plan.messages] == [("cs101", "welcome", 3)]
    assert "  ✉ cs101: welcome (3 members)" in render_text(plan).splitlines()
    assert "- ✉ cs101: welcome (3 members)" in render_markdown(plan).splitlines()
    [doc] = json.loads(render_json(plan))["plan"]["messages"]
    assert doc["text"] == "Welcome to CS 101! @ada, @alan and @grace joined (3)."
    assert campus.emu.count(method="POST") == 0  # a plan posts nothing


async def test_a_read_only_client_cannot_post(campus: Campus) -> None:
    group = campus.emu.state.add_group("Club")
    with Journal.open(campus.settings.journal.path) as journal:
        run_id = journal.start_run(trigger="test", mode="apply", spec_digest="d")
        async with Client(campus.emu.base_url, TOKEN, read_only=True) as client:
            courier = Courier(client, journal, run_id)
            with pytest.raises(ReadOnlyViolation):
                await courier.post("club", "welcome", "hi", str(group["conversation_id"]))
    assert campus.emu.state.messages() == [] and campus.emu.count(method="POST") == 0


def test_history_shows_each_runs_messages(campus: Campus) -> None:
    campus.write({"admins": ADMINS, "cs101": {"name": "CS 101", "members": ["ada"]}}, NOTIFY)
    anyio.run(campus.run)
    text = run_cli("history", "--config", str(campus.config)).stdout
    as_json = run_cli("history", "--json", "--config", str(campus.config))
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("✉ welcome cs101: sent (message ") for line in lines), text
    assert any(line.startswith("✉ summary admins: sent (message ") for line in lines), text
    [run] = json.loads(as_json.stdout)
    rows = {(m["key"], m["kind"]): m for m in run["messages"]}  # welcomes go out concurrently
    assert {k: m["status"] for k, m in rows.items()} == {
        ("admins", "welcome"): "sent",
        ("cs101", "welcome"): "sent",
        ("admins", "summary"): "sent",
    }
    assert run["messages"][-1]["kind"] == "summary"  # after the run
    assert rows["cs101", "welcome"]["text"] == "Welcome to CS 101! @ada joined (1)."
