"""The `groupsync` command line: thin click commands over the library (parse, call, print, exit)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from groupsync import __version__
from groupsync.errors import EXIT_USAGE, GroupsyncError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $GROUPSYNC_CONFIG, then ./groupsync.yaml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="groupsync")
def cli() -> None:
    """Keep eCampus chat groups the way a YAML spec in git says they should be."""


@cli.command()
@config_option
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Spec file or directory (instead of the config's spec.path; then no config is needed).",
)
@click.option("--online", is_flag=True, help="Also check every username against the API.")
@click.option("--strict", is_flag=True, help="Fail on warnings too (exit 1), e.g. in CI.")
def validate(config_path: Path | None, spec_path: Path | None, online: bool, strict: bool) -> None:
    """Check the config and the spec: every error as file:line:column, exit 0 or 1.

    Warnings are printed but only fail with --strict.
    """
    from groupsync.validate import validate as run_validate

    result = run_validate(config_path, spec_path=spec_path, online=online)
    for line in result.lines():
        click.echo(line, err=True)
    code = result.exit_code(strict=strict)
    click.echo(result.summary(), err=bool(code))
    sys.exit(code)


@cli.command()
@config_option
def schema(config_path: Path | None) -> None:
    """Print the spec's JSON Schema (for editors: yaml-language-server)."""
    import json

    from groupsync.spec import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user error prints one clear message and exits with its code, no traceback."""
    try:
        code = cli.main(args=argv, prog_name="groupsync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        # click's own usage exit code is 2, which design.md reserves for "changes pending".
        sys.exit(EXIT_USAGE if isinstance(e, click.UsageError) else 1)
    except GroupsyncError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
