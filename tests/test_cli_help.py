"""Help that teaches: every option says what it does, and every command's help ends with one or
two examples that the command really accepts. Walks the commands through click's own API."""

from __future__ import annotations

import inspect
import itertools
import shlex
from pathlib import Path

import click
import pytest

from groupsync.cli import cli

REPO = Path(__file__).resolve().parent.parent
COMMANDS = sorted(cli.commands)
SHELL = {">", ">>", "|", "&&", ";"}


def rendered_help(name: str) -> str:
    command = cli.commands[name]
    with click.Context(command, info_name=f"groupsync {name}") as ctx:
        return command.get_help(ctx)


def examples(command: click.Command) -> list[str]:
    """The lines of the closing paragraph, which must be a `\\b` Example(s) block."""
    last = inspect.cleandoc(command.help or "").split("\n\n")[-1].splitlines()
    assert last[:1] == ["\b"], f"{command.name}: help does not end with an unwrapped block"
    assert last[1:2] in (["Example:"], ["Examples:"]), f"{command.name}: no Example(s) section"
    return [line.strip() for line in last[2:]]


def test_every_command_is_walked() -> None:
    assert {"apply", "demo", "export", "history", "plan", "run", "validate"} <= set(COMMANDS)


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_every_option_has_help_text(name: str | None) -> None:
    command = cli if name is None else cli.commands[name]
    missing = [p.opts[-1] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert missing == [], f"options without help text in {name or 'groupsync'}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_ends_with_examples_the_command_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = cli.commands[name]
    lines = examples(command)
    assert 1 <= len(lines) <= 2, lines
    shown = rendered_help(name).splitlines()
    monkeypatch.chdir(REPO)  # examples may name the repository's files (examples/seed.yaml)
    for line in lines:
        assert f"    {line}" in shown, f"click rewrapped the example {line!r}"
        words = shlex.split(line, comments=True)
        assert words[:2] == ["groupsync", name], line
        args = list(itertools.takewhile(lambda w: w not in SHELL, words[2:]))
        command.make_context(name, args)  # a UsageError here: the example is wrong


def test_a_wrong_example_would_be_caught() -> None:
    """Guards the test above: parsing really rejects an option the command does not have."""
    with pytest.raises(click.UsageError):
        cli.commands["history"].make_context("history", ["--limit", "3", "--colour"])
