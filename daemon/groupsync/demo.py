"""`groupsync demo`: the whole story on a built-in emulator, told with the real commands.

Each step runs the same CLI command a user would type, in-process, against an emulator seeded
with the example campus and its drift, so what the demo shows is what groupsync does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
import yaml

from groupsync.emulator import DEMO_TOKEN, Emulator, serve_emulator
from groupsync.errors import GroupsyncError
from groupsync.outcomes import ExitCode

TOKEN_ENV = "GROUPSYNC_DEMO_TOKEN"


def _step(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def _run(*args: str, ok: tuple[int, ...] = (0,)) -> bool:
    """One CLI command, as typed; True when it exits with one of the `ok` codes."""
    from groupsync.cli import main

    click.secho("$ groupsync " + " ".join(args), fg="cyan")
    try:
        main(list(args))
    except SystemExit as e:
        return e.code in ok
    return 0 in ok


def _rename_by_hand(emu: Emulator, name: str, new_name: str) -> None:
    group = next(g for g in emu.state.groups(archived=False) if g["name"] == name)
    emu.state.update_group(group["id"], {"name": new_name})


def run_demo(examples: Path) -> int:
    seed, spec = examples / "seed.yaml", examples / "groups"
    for needed in (seed, spec):
        if not needed.exists():
            raise GroupsyncError(f"{needed} is missing: run the demo from the repository's root")
    with (
        tempfile.TemporaryDirectory(prefix="groupsync-demo-") as tmp,
        serve_emulator(token=DEMO_TOKEN, seed=seed) as emu,
    ):
        config = Path(tmp) / "groupsync.yaml"
        settings = {
            "api": {"base_url": emu.base_url, "token_env": TOKEN_ENV},
            "spec": {"path": str(spec.resolve())},
            "journal": {"path": str(Path(tmp) / "groupsync.db")},
        }
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        os.environ[TOKEN_ENV] = DEMO_TOKEN
        cfg = ("--config", str(config))
        active, archived = emu.state.groups(archived=False), emu.state.groups(archived=True)
        _step(
            f"An eCampus account: the emulator at {emu.base_url}, seeded from {seed} "
            f"({len(active)} active and {len(archived)} archived groups, "
            f"{len(emu.state.contacts())} contacts)"
        )
        _step(f"The spec in {spec} is checked before anything touches the API")
        codes = [_run("validate", *cfg)]
        _step("Dry run: what would change, and why (spec or drift)")
        codes.append(_run("plan", *cfg, "--detailed-exitcode", ok=(2,)))
        _step("Apply it; every change is journaled before and after its API call")
        codes.append(_run("apply", "--yes", *cfg))
        _step("Plan again: the account now matches the spec")
        codes.append(_run("plan", *cfg, "--detailed-exitcode"))
        _step("Someone renames a course by hand in eCampus; the next plan calls it drift")
        _rename_by_hand(emu, "CS 101 — Intro to Programming", "CS101 (old name)")
        codes.append(_run("plan", *cfg, "--detailed-exitcode", ok=(2,)))
        codes.append(_run("apply", "--yes", *cfg))
        _step("What the journal recorded")
        codes.append(_run("history", *cfg, "--limit", "3"))
        _step(
            f"Done: {emu.count()} API requests in all. Try `groupsync emulator --seed {seed}` "
            "and point a config of your own at it."
        )
    if not all(codes):
        click.echo("The demo hit an error (see above).", err=True)
        return ExitCode.ERROR
    return 0
