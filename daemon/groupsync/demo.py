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
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from groupsync.emulator import DEMO_TOKEN, Emulator, serve_emulator
from groupsync.outcomes import ExitCode

DEMO_DATA = Path(__file__).with_name("data") / "demo"
"""seed.yaml (the emulated account), groups/ (the spec) and roster/ (a registrar's export and
the spec that generates its course groups): the same files as examples/."""

TOKEN_ENV = "GROUPSYNC_DEMO_TOKEN"


class _Commands:
    """Runs `groupsync ARGS --config CONFIG` as a child process; remembers whether all went well."""

    def __init__(self, config: Path) -> None:
        self._config = ("--config", str(config))
        self._env = {**os.environ, TOKEN_ENV: DEMO_TOKEN}
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


def _config(folder: Path, name: str, base_url: str, spec: Path) -> Path:
    """folder/NAME.yaml: the emulator's API, `spec`, and a journal of its own (NAME.db)."""
    config = folder / f"{name}.yaml"
    settings = {
        "api": {"base_url": base_url, "token_env": TOKEN_ENV},
        "spec": {"path": str(spec)},
        "journal": {"path": str(folder / f"{name}.db")},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def run_demo() -> int:
    seed, spec = DEMO_DATA / "seed.yaml", DEMO_DATA / "groups"
    with (
        tempfile.TemporaryDirectory(prefix="groupsync-demo-") as tmp,
        serve_emulator(token=DEMO_TOKEN, seed=seed) as emu,
    ):
        commands = _Commands(_config(Path(tmp), "groupsync", emu.base_url, spec))
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
        roster_spec = DEMO_DATA / "roster" / "spec.yaml"
        _step(
            f"Course groups from the registrar: {roster_spec} generates a group per class of a"
            " OneRoster export, and mixes a club's CSV list into a group"
        )
        courses = _Commands(_config(Path(tmp), "roster", emu.base_url, roster_spec))
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
