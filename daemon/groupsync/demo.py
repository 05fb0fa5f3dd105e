"""`groupsync demo`: the whole story on a built-in emulator, told with the real commands.

Each step runs the command a user would type, as its own `python -m groupsync` process, against
an emulator seeded with the example campus and its drift, so what the demo shows is what
groupsync does. Child processes keep the demo free of the CLI's exits and of its environment:
the token goes to the children only.

The campus ships inside the package (`DEMO_DATA`, a copy of the repository's examples/) and
every file the demo writes goes to a temporary folder, so it runs from any folder, a read-only
one too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import yaml

from groupsync.emulator import DEMO_TOKEN, Emulator, WebhookTarget, serve_emulator
from groupsync.outcomes import ExitCode
from groupsync.secret import Secret

DEMO_DATA = Path(__file__).with_name("data") / "demo"
"""seed.yaml (the emulated account), groups/ (the spec) and roster/ (a registrar's export and
the spec that generates its course groups): the same files as examples/."""

TOKEN_ENV = "GROUPSYNC_DEMO_TOKEN"
WEBHOOK_SECRET_ENV = "GROUPSYNC_DEMO_WEBHOOK_SECRET"
DEMO_WEBHOOK_SECRET = "demo-webhook-secret"  # the emulator's and the daemon's, both local
DAEMON_START_S = 30.0  # for the daemon's first run
REPAIR_WAIT_S = 5.0  # a webhook repair takes well under a second; past this, say so


class _Commands:
    """Runs `groupsync ARGS --config CONFIG` as a child process; remembers whether all went well."""

    def __init__(self, config: Path) -> None:
        self._config = ("--config", str(config))
        self._env = {
            **os.environ,
            TOKEN_ENV: DEMO_TOKEN,
            WEBHOOK_SECRET_ENV: DEMO_WEBHOOK_SECRET,
        }
        self.all_ok = True

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> None:
        argv = [*args, *self._config]
        click.secho("$ groupsync " + " ".join(argv), fg="cyan")
        with subprocess.Popen([sys.executable, "-m", "groupsync", *argv], env=self._env) as child:
            try:
                code = child.wait()
            except KeyboardInterrupt:
                # The child got the same Ctrl-C and winds down by itself; the emulator it talks
                # to must outlive it. A second Ctrl-C stops waiting.
                child.wait()
                raise
        if code not in ok:
            self.all_ok = False


def _step(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def _rename_by_hand(emu: Emulator, name: str, new_name: str) -> None:
    group = next(g for g in emu.state.groups(archived=False) if g["name"] == name)
    emu.state.update_group(group["id"], {"name": new_name})


def _show_messages(emu: Emulator) -> None:
    """The chats as their members see them: the API cannot list messages, the emulator can."""
    names = {g["conversation_id"]: g["name"] for g in emu.state.groups(archived=False)}
    names |= {g["conversation_id"]: g["name"] for g in emu.state.groups(archived=True)}
    for m in emu.state.messages():
        click.echo(f"[{names.get(m['conversation_id'], m['conversation_id'])}]")
        click.echo("  " + m["message"].replace("\n", "\n  "))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(folder: Path, name: str, base_url: str, spec: Path, port: int) -> Path:
    """folder/NAME.yaml: the emulator's API, `spec`, a journal of its own (NAME.db), and, for
    `run`, webhooks on 127.0.0.1:`port` with a schedule of an hour."""
    config = folder / f"{name}.yaml"
    settings = {
        "api": {"base_url": base_url, "token_env": TOKEN_ENV},
        "spec": {"path": str(spec)},
        "journal": {"path": str(folder / f"{name}.db")},
        "schedule": {"every": "1h"},
        "http": {"listen": f"127.0.0.1:{port}"},
        "webhooks": {"enabled": True, "secret_env": WEBHOOK_SECRET_ENV},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def _webhook_repair(commands: _Commands, emu: Emulator, name: str) -> None:
    """`groupsync run` in the background; a rename by hand; the time until it is put back."""
    click.secho("$ groupsync run " + " ".join(commands._config) + " &", fg="cyan")
    with subprocess.Popen(
        [sys.executable, "-m", "groupsync", "run", *commands._config],
        env=commands._env,
        stderr=subprocess.DEVNULL,
    ) as daemon:
        try:
            if not _until(lambda: _first_run_done(commands), DAEMON_START_S):
                commands.all_ok = False
                click.echo("the daemon did not finish its first run", err=True)
                return
            _rename_by_hand(emu, name, "renamed by hand")
            started = time.monotonic()
            back = _until(lambda: any(g["name"] == name for g in emu.state.groups()), REPAIR_WAIT_S)
            took = time.monotonic() - started
            if back:
                click.echo(f"{name!r} was renamed by hand and put back {took:.2f}s later, by a")
                click.echo("webhook: the schedule is 1h, so no scheduled run came in between.")
            else:
                commands.all_ok = False
                click.echo(f"not put back within {REPAIR_WAIT_S:.0f}s", err=True)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)


def _first_run_done(commands: _Commands) -> bool:
    journal = Path(commands._config[1]).with_suffix(".db")
    if not journal.exists():
        return False
    out = subprocess.run(
        [sys.executable, "-m", "groupsync", "history", "--limit", "1", *commands._config],
        env=commands._env,
        capture_output=True,
        text=True,
        check=False,
    )
    return "startup" in out.stdout


def _until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def run_demo() -> int:
    seed, spec = DEMO_DATA / "seed.yaml", DEMO_DATA / "groups"
    port = _free_port()
    webhook = WebhookTarget(
        f"http://127.0.0.1:{port}/webhooks/ecampus", Secret(DEMO_WEBHOOK_SECRET)
    )
    with (
        tempfile.TemporaryDirectory(prefix="groupsync-demo-") as tmp,
        serve_emulator(token=DEMO_TOKEN, seed=seed, webhook=webhook) as emu,
    ):
        commands = _Commands(_config(Path(tmp), "groupsync", emu.base_url, spec, port))
        active, archived = emu.state.groups(archived=False), emu.state.groups(archived=True)
        _step(
            f"An eCampus account: the emulator at {emu.base_url}, seeded from {seed} "
            f"({len(active)} active and {len(archived)} archived groups, "
            f"{len(emu.state.contacts())} contacts)"
        )
        _step(f"The spec in {spec} is checked before anything touches the API")
        commands.run("validate")
        _step("Dry run: what would change, and why (spec or drift)")
        commands.run("plan", "--detailed-exitcode", ok=(ExitCode.CHANGES,))
        _step("Apply it; every change is journaled before and after its API call")
        commands.run("apply", "--yes")
        _step("Plan again: the account now matches the spec")
        commands.run("plan", "--detailed-exitcode")
        _step("Someone renames a course by hand in eCampus; the next plan calls it drift")
        _rename_by_hand(emu, "CS 101 — Intro to Programming", "CS101 (old name)")
        commands.run("plan", "--detailed-exitcode", ok=(ExitCode.CHANGES,))
        commands.run("apply", "--yes")
        _step("What the journal recorded, the messages posted included")
        commands.run("history", "--limit", "3")
        _step(
            "What groupsync said in the chats (notify.yaml): welcomes where the spec added"
            " members, and a summary of each run in the admin group"
        )
        _show_messages(emu)
        _step("The daemon with webhooks: eCampus tells it of a change, it repairs at once")
        _webhook_repair(commands, emu, "CS 101 — Intro to Programming")
        roster_spec = DEMO_DATA / "roster" / "spec.yaml"
        _step(
            f"Course groups from the registrar: {roster_spec} generates a group per class of a"
            " OneRoster export, and mixes a club's CSV list into a group"
        )
        courses = _Commands(_config(Path(tmp), "roster", emu.base_url, roster_spec, port))
        courses.run("validate")
        courses.run("apply", "--yes")
        commands.all_ok &= courses.all_ok
        _step(
            f"Done: {emu.count()} API requests in all. Try `groupsync emulator --seed {seed}` "
            f"and a config of your own whose spec.path is {spec}."
        )
    if not commands.all_ok:
        click.echo("The demo hit an error (see above).", err=True)
        return ExitCode.ERROR
    return ExitCode.OK
