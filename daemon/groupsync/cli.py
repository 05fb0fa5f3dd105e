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


@cli.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True, help="0 picks a free port.")
@click.option(
    "--token",
    envvar="GROUPSYNC_EMULATOR_TOKEN",
    default=None,
    help="Bearer token to accept (default: the demo token 'demo-token').",
)
@click.option(
    "--admin-token",
    envvar="GROUPSYNC_EMULATOR_ADMIN_TOKEN",
    default=None,
    help="Bearer token for /_admin (faults, counters, reset); without it /_admin is off.",
)
@click.option(
    "--seed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML/JSON with contacts and groups to start from (ignored if --state holds data).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file that keeps the state across restarts (default: memory only).",
)
@click.option("--latency-ms", type=float, default=0, help="Delay every API request.")
@click.option("--rate-limit", type=float, default=None, help="Answer 429 past N requests/second.")
@click.option("--error-rate", type=float, default=0, help="Fraction of requests answered 5xx.")
@click.option(
    "--ambiguous-rate",
    type=float,
    default=0,
    help="Fraction of writes that commit, then answer 503 or drop the connection.",
)
@click.option(
    "--no-retry-after-rate", type=float, default=0, help="Fraction of 429s without Retry-After."
)
def emulator(
    config_path: Path | None,
    host: str,
    port: int,
    token: str | None,
    admin_token: str | None,
    seed: Path | None,
    state_path: Path | None,
    latency_ms: float,
    rate_limit: float | None,
    error_rate: float,
    ambiguous_rate: float,
    no_retry_after_rate: float,
) -> None:
    """Serve the eCampus API emulator in the foreground until Ctrl-C."""
    from groupsync.emulator import DEMO_TOKEN, Faults
    from groupsync.emulator.server import run_foreground

    try:
        faults = Faults(
            latency_s=latency_ms / 1000,
            rate_limit_per_s=rate_limit,
            error_fraction=error_rate,
            ambiguous_fraction=ambiguous_rate,
            retry_after_missing_fraction=no_retry_after_rate,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e

    def ready(base_url: str) -> None:
        # A user-supplied token is a secret: only the public demo token is ever printed.
        shown = f"token {DEMO_TOKEN}" if token is None else "the token you gave"
        click.echo(f"eCampus emulator serving {base_url} (bearer {shown}); Ctrl-C stops it")

    run_foreground(
        host=host,
        port=port,
        on_ready=ready,
        token=token or DEMO_TOKEN,
        admin_token=admin_token,
        seed=seed,
        state_path=state_path,
        faults=faults,
    )


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="One reconcile, then exit with its code (for timers).")
def run(config_path: Path | None, once: bool) -> None:
    """The daemon: reconcile now, then on the schedule, until SIGTERM (SIGHUP reloads).

    Exit codes with --once: 0 applied or nothing to do, 1 error, 3 refused by a safety limit.
    """
    from groupsync.daemon import run as run_daemon

    sys.exit(run_daemon(config_path, once=once))


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
