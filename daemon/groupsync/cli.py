"""The `groupsync` command line: thin click commands over the library (parse, call, print, exit)."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from groupsync import __version__, asyncmain, private
from groupsync.errors import GroupsyncError
from groupsync.loader import load, read_config
from groupsync.outcomes import ExitCode
from groupsync.render import want_color
from groupsync.secret import Secret

if TYPE_CHECKING:
    from groupsync.loader import Loaded
    from groupsync.models import Group
    from groupsync.outcomes import ChangeStatus
    from groupsync.plan import Change, Plan
    from groupsync.reconcile import Planned, RunReport
    from groupsync.state import State

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $GROUPSYNC_CONFIG, then ./groupsync.yaml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="groupsync")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log what happens on stderr as it happens: every API request and retry (never the"
    " token). `run` logs by its config's log settings instead.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Keep eCampus chat groups the way a YAML spec in git says they should be.

    \b
    Examples:
      groupsync demo           # the whole story on a built-in emulator, no account needed
      groupsync plan --help    # every command has its own help and examples
      groupsync -v plan        # and every API request it makes
    """
    from groupsync.logs import setup_console_logging
    from groupsync.waitline import on_terminal

    if ctx.invoked_subcommand == "run":  # the daemon sets up its own logging, from its config
        return
    setup_console_logging(verbose=verbose)
    if not verbose:  # a status line on a terminal; --verbose logs every retry instead
        ctx.with_resource(on_terminal(sys.stderr))


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

    \b
    Examples:
      groupsync validate --spec groups --strict   # a spec repository's CI, no config needed
      groupsync validate --online                 # also ask the API about every username
    """
    from groupsync.validate import validate as run_validate

    result = run_validate(config_path, spec_path=spec_path, online=online)
    for line in result.lines():
        click.echo(line, err=True)
    code = result.exit_code(strict=strict)
    click.echo(result.summary(strict=strict), err=bool(code))
    sys.exit(code)


@cli.command()
@config_option
def schema(config_path: Path | None) -> None:
    """Print the spec's JSON Schema (for editors: yaml-language-server).

    \b
    Example:
      groupsync schema > spec.schema.json
    """
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
    show_envvar=True,
    default=None,
    help="Bearer token to accept (default: the demo token 'demo-token').",
)
@click.option(
    "--admin-token",
    envvar="GROUPSYNC_EMULATOR_ADMIN_TOKEN",
    show_envvar=True,
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
@click.option("--drip-ms", type=float, default=0, help="Send answers a byte at a time, N ms apart.")
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
@click.option(
    "--webhook-url", default=None, help="POST a signed event for every change to a group here."
)
@click.option(
    "--webhook-secret-env",
    default="ECAMPUS_WEBHOOK_SECRET",
    show_default=True,
    help="The environment variable holding the secret that signs the events.",
)
@click.option(
    "--webhook-dup-rate", type=float, default=0, help="Fraction of events delivered twice."
)
@click.option(
    "--webhook-delay-ms",
    type=float,
    default=0,
    help="Hold each event back a random 0..N ms (so they arrive out of order).",
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
    drip_ms: float,
    rate_limit: float | None,
    error_rate: float,
    ambiguous_rate: float,
    no_retry_after_rate: float,
    webhook_url: str | None,
    webhook_secret_env: str,
    webhook_dup_rate: float,
    webhook_delay_ms: float,
) -> None:
    """Serve the eCampus API emulator in the foreground until Ctrl-C.

    \b
    Examples:
      groupsync emulator --seed examples/seed.yaml --port 8765
      groupsync emulator --latency-ms 200 --error-rate 0.1   # a slow, flaky API
    """
    from groupsync.emulator import DEMO_TOKEN, Faults, WebhookTarget
    from groupsync.emulator.server import build_app, run_foreground

    try:
        faults = Faults(
            latency_s=latency_ms / 1000,
            drip_s=drip_ms / 1000,
            rate_limit_per_s=rate_limit,
            error_fraction=error_rate,
            ambiguous_fraction=ambiguous_rate,
            retry_after_missing_fraction=no_retry_after_rate,
            webhook_dup_rate=webhook_dup_rate,
            webhook_delay_ms=webhook_delay_ms,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    webhook_secret = None
    if webhook_url:
        value = os.environ.get(webhook_secret_env, "").strip()
        if not value:
            raise click.UsageError(f"--webhook-url needs a secret in ${webhook_secret_env}")
        # The first of several (rotation): the one eCampus signs with.
        webhook_secret = Secret(value.split(",")[0].strip(), source=f"${webhook_secret_env}")

    def ready(base_url: str) -> None:
        # A user-supplied token is a secret: only the public demo token is ever printed.
        shown = f"token {DEMO_TOKEN}" if token is None else "the token you gave"
        click.echo(f"eCampus emulator serving {base_url} (bearer {shown}); Ctrl-C stops it")

    app = build_app(
        token=token or DEMO_TOKEN,
        admin_token=admin_token,
        seed=seed,
        state_path=state_path,
        faults=faults,
        webhook=None if webhook_secret is None else WebhookTarget(webhook_url, webhook_secret),
    )
    run_foreground(app, host=host, port=port, on_ready=ready)


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="One reconcile, then exit with its code (for timers).")
def run(config_path: Path | None, once: bool) -> None:
    """The daemon: reconcile now, then on the schedule, until SIGTERM (SIGHUP reloads).

    Exit codes with --once: 0 applied or nothing to do, 1 error, 3 refused by a safety limit.

    \b
    Examples:
      groupsync run --config /etc/groupsync/groupsync.yaml
      groupsync run --once   # one reconcile, e.g. from a systemd timer
    """
    from groupsync.daemon import run as run_daemon

    sys.exit(run_daemon(config_path, once=once))


def _render(planned: Planned, fmt: str, *, color: bool) -> str:
    from groupsync import render

    plan, state = planned.plan, planned.state.line
    if fmt == "json":
        return render.render_json(plan, state=state)
    if fmt == "markdown":
        return render.render_markdown(plan, state=state)
    return render.render_text(plan, color=color, state=state)


def _write(path: Path, text: str) -> None:
    try:
        private.write_text(path, text)
    except FileNotFoundError:
        raise GroupsyncError(
            f"cannot write {path}: the folder {path.parent} does not exist (create it first)"
        ) from None
    except OSError as e:
        raise GroupsyncError(f"cannot write {path}: {e.strerror}") from None


def _plan_exit_code(plan: Plan, *, detailed: bool) -> int:
    if plan.refused:
        return ExitCode.UNSAFE
    if plan.errors:
        return ExitCode.ERROR
    writes = any(c.writes for c in plan.changes)
    return ExitCode.CHANGES if detailed and writes else ExitCode.OK


@cli.command("plan")
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="text for a terminal, json for tools, markdown for a pull-request comment.",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when the account would change (0 no change, 1 error, 3 refused by a safety"
    " limit); adoptions that only the journal records do not count.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also save the plan for `groupsync apply FILE` (holds no secret).",
)
@click.option("--force", is_flag=True, help="Plan as `apply --force` would (no safety refusal).")
@click.option("--allow-delete", is_flag=True, help="Plan as `apply --allow-delete` would.")
@click.option(
    "--state",
    "state_from",
    metavar="FILE|URL",
    help="Plan from this state snapshot instead of the journal: a file from `groupsync state"
    " export`, or the daemon's http(s)://HOST:PORT/state.",
)
@click.option(
    "--state-token-env",
    metavar="NAME",
    default="GROUPSYNC_HTTP_TOKEN",
    show_default=True,
    help="Environment variable holding the bearer token for a --state URL.",
)
@click.option(
    "--require-state",
    is_flag=True,
    help="Exit 1 rather than plan with no journal and no --state (in CI such a plan is wrong).",
)
def plan_command(
    config_path: Path | None,
    fmt: str,
    detailed_exitcode: bool,
    out: Path | None,
    force: bool,
    allow_delete: bool,
    state_from: str | None,
    state_token_env: str,
    require_state: bool,
) -> None:
    """Dry run: read the account, print what apply would change. Writes nothing to the API.

    The plan reads which group each key is, and what was last applied, from the journal, or
    from a snapshot of the daemon's journal (--state) where there is none, as in CI. Its first
    line names that state.

    \b
    Examples:
      groupsync plan -o plan.json   # review it, then: groupsync apply plan.json
      groupsync plan --state https://sync.example.edu/state --require-state   # CI
    """
    from groupsync.gitspec import git_info
    from groupsync.planfile import dump
    from groupsync.reconcile import RunOptions, Session

    loaded = load(config_path)
    for roster in loaded.spec.rosters:  # on stderr: stdout is the plan, maybe JSON for a tool
        click.echo(roster.line(), err=True)
    state = _plan_state(loaded, state_from, state_token_env, require=require_state)
    session = Session(loaded.settings, loaded.token, state=state)  # reads, never writes
    options = RunOptions(force=force, allow_delete=allow_delete)
    commit = git_info(loaded.settings.spec.path)[0]  # for the messages' {commit}
    planned = asyncmain.run(partial(session.plan, loaded.spec, options, commit=commit))
    click.echo(_render(planned, fmt, color=want_color(sys.stdout)))
    if out is not None:
        _write(out, dump(planned.plan, loaded.spec.digest, planned.actual))
        click.echo(f"Saved the plan to {out}; apply it with: groupsync apply {out}", err=True)
    sys.exit(_plan_exit_code(planned.plan, detailed=detailed_exitcode))


def _plan_state(loaded: Loaded, state_from: str | None, token_env: str, *, require: bool) -> State:
    """The snapshot `--state` names, else the journal's state (none without a journal file)."""
    import os

    from groupsync.reconcile import Session
    from groupsync.secret import Secret
    from groupsync.stateread import read_snapshot

    if state_from is not None:
        value = os.environ.get(token_env)
        token = Secret(value, source=f"${token_env}") if value else None
        return read_snapshot(state_from, token=token, token_name=f"${token_env}")
    state = Session(loaded.settings, loaded.token).state()
    if require and state.source == "none":
        raise GroupsyncError(
            f"{state.line.text()}. --require-state: there is no journal at"
            f" {loaded.settings.journal.path}; pass --state FILE|URL (the daemon's state)"
        )
    return state


@cli.command()
@config_option
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", "-y", is_flag=True, help="Apply without asking (needed when not on a TTY).")
@click.option("--force", is_flag=True, help="Apply even past the safety limits.")
@click.option("--allow-delete", is_flag=True, help="Let policy.on_removed: delete delete groups.")
@click.option(
    "--checksum", help="Apply only if the freshly computed plan has exactly this checksum."
)
def apply(
    config_path: Path | None,
    planfile: Path | None,
    yes: bool,
    force: bool,
    allow_delete: bool,
    checksum: str | None,
) -> None:
    """Show the plan, ask, apply it and journal every change.

    A saved PLANFILE (from `plan -o`) is applied only while the spec and every group it touches
    are as they were when it was made; otherwise it is refused as stale.

    Ctrl-C (or SIGTERM) at the prompt applies nothing; during the apply it starts no more
    changes and lets the ones in flight finish (at most api.timeout_s); a second one stops at
    once. Either way the summary is printed and the exit code is 130.

    \b
    Examples:
      groupsync apply
      groupsync apply --yes plan.json   # exactly the plan saved by `plan -o plan.json`
    """
    from groupsync import planfile as planfiles
    from groupsync.journal import Journal
    from groupsync.reconcile import RunOptions, Session
    from groupsync.stopping import RunStop, stop_on_signals

    loaded = load(config_path)
    settings = loaded.settings
    saved = planfiles.load(planfile) if planfile is not None else None
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not yes and not interactive:
        raise GroupsyncError("not on a terminal: pass --yes to apply without confirmation")

    progress = _Progress(enabled=interactive)

    def show(planned: Planned) -> None:
        # Checked on every plan, an empty one too: "no changes" must not pass for "applied
        # the plan that was reviewed".
        if saved is not None:
            planfiles.check_fresh(saved, planned.plan, loaded.spec.digest, planned.actual)
        if checksum is not None and planned.plan.checksum != checksum:
            raise planfiles.StalePlan(
                f"plan checksum is {planned.plan.checksum}, not {checksum}: "
                "the plan changed since it was reviewed; plan again"
            )
        click.echo(_render(planned, "text", color=want_color(sys.stdout)))
        progress.total = len(planned.plan.changes)

    def approve(planned: Planned) -> bool:
        return yes or _confirm("Apply these changes?")

    async def run(journal: Journal) -> RunReport:
        stop = RunStop()
        options = RunOptions(
            force=force,
            allow_delete=allow_delete,
            show=show,
            approve=approve,
            on_start=progress.start,
            on_progress=progress.update,
            spec_source=loaded.source,
            stop=stop,
        )
        with stop_on_signals(stop, grace_s=settings.api.timeout_s, notify=progress.note):
            return await Session(settings, loaded.token, journal).reconcile(loaded.spec, options)

    with Journal.open(settings.journal.path) as journal, journal.writer_lock(), progress:
        report = asyncmain.run(partial(run, journal))
    _echo_outcome(report)
    sys.exit(report.exit_code)


@cli.command()
@config_option
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Show the newest N runs.",
)
@click.option("--group", "key", help="Only runs that changed this key, and only its changes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(config_path: Path | None, limit: int, key: str | None, as_json: bool) -> None:
    """What the journal recorded: runs, and what each changed and why.

    \b
    Examples:
      groupsync history --limit 3
      groupsync history --group cs101 --json
    """
    import json

    from groupsync.journal import Journal
    from groupsync.roster.summary import history_line

    settings = read_config(config_path)
    runs: list[dict[str, Any]] = []
    # Reading must not create the journal: a missing one just means nothing ran yet.
    if settings.journal.path.exists():
        with Journal.open(settings.journal.path) as journal:
            runs = journal.history(limit=limit, key=key)
    if as_json:
        click.echo(json.dumps([run.to_json() for run in runs], indent=2, sort_keys=True))
        return
    if not runs:
        click.echo(f"No run changed {key} yet." if key else "Nothing applied yet.")
    for run in runs:
        commit = f" commit {run.spec_commit[:10]}" if run.spec_commit else ""
        dirty = " (dirty)" if run.spec_dirty else ""
        click.echo(
            f"run {run.id}  {run.started_at}  {run.trigger} {run.mode}"
            f"  {run.outcome or 'unfinished'}{commit}{dirty}"
        )
        if run.error:
            click.echo(f"    error: {run.error}")
        for roster in run.rosters:
            click.echo(f"    {history_line(roster)}")
        for change in run.changes:
            click.echo(f"    {change.summary}")
        for message in run.messages:
            click.echo(f"    {message.summary}")


@cli.command()
@config_option
@click.option("--include-archived", is_flag=True, help="Export archived groups too.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
def export(config_path: Path | None, include_archived: bool, out: Path | None) -> None:
    """Write the account's groups as a spec, pinned by id, to bring them under groupsync.

    \b
    Examples:
      groupsync export -o groups/existing.yaml
      groupsync export --include-archived > everything.yaml
    """
    from groupsync.config import resolve_token
    from groupsync.export import export_spec
    from groupsync.reconcile import Session

    settings = read_config(config_path)  # no spec: exporting is how a first spec is made
    session = Session(settings, resolve_token(settings))

    async def read() -> list[Group]:
        async with session.reader() as client:
            return await client.list_all_groups()

    groups = asyncmain.run(read)
    text = export_spec(groups, include_archived=include_archived)
    if out is None:
        click.echo(text, nl=False)
    else:
        _write(out, text)
    left_out = 0 if include_archived else sum(g.archived for g in groups)
    if left_out:
        click.echo(
            f"Archived groups left out: {left_out} (--include-archived exports them too).",
            err=True,
        )


@cli.group("state")
def state_group() -> None:
    """State snapshots: what a plan reads from the journal, for plans made where it is not.

    \b
    Example:
      groupsync state export -o state.json   # then elsewhere: groupsync plan --state state.json
    """


@state_group.command("export")
@config_option
@click.option(
    "-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here (0600)."
)
def state_export(config_path: Path | None, out: Path | None) -> None:
    """Write the journal's state as a JSON snapshot (no token, no secret) for `plan --state`.

    \b
    Example:
      groupsync state export -o state.json
    """
    from groupsync.journal import Journal
    from groupsync.state import load_snapshot, snapshot_bytes

    path = read_config(config_path).journal.path
    if not path.exists():  # exporting must not create a journal
        raise GroupsyncError(f"journal {path} does not exist: nothing was applied with it yet")
    with Journal.open(path) as journal:
        data = snapshot_bytes(journal)
    where = str(out or "the output")
    state = load_snapshot(data, where)  # what `plan --state` would refuse is not written
    if out is None:
        click.echo(data.decode("utf-8"), nl=False)
        return
    _write(out, data.decode("utf-8"))
    click.echo(f"Exported {state.line.text()}", err=True)


@cli.command()
def demo() -> None:
    """The whole story on a built-in emulator, no account needed: plan, apply, drift, history.

    It runs from any folder and writes only to a temporary one; its campus is the repository's
    examples/, shipped inside groupsync.

    \b
    Example:
      groupsync demo
    """
    from groupsync.demo import run_demo

    sys.exit(run_demo())


def _confirm(question: str) -> bool:
    """Ask yes/no; end of input is a no. Ctrl-C or SIGTERM ends the prompt at once, as
    Interrupted: nothing is applied."""
    from groupsync.stopping import Interrupted, Signalled, interruptible, read_line

    with interruptible():
        try:
            while True:
                click.echo(f"{question} [y/N]: ", nl=False)
                answer = read_line().strip().lower()
                if answer in ("y", "yes"):
                    return True
                if answer in ("", "n", "no"):
                    return False
                click.echo("Please answer y or n.")
        except EOFError:
            click.echo()
            return False
        except Signalled as stop:
            click.echo()
            raise Interrupted(f"stopped by {stop.name} at the confirmation prompt") from None


def _describe_change(change: Change | None) -> str | None:
    return None if change is None else f"{change.action} {change.key}"


class _Progress:
    """A progress bar on a terminal once a plan has more than a few changes; silent otherwise.

    It names the change last sent (action and key), so a slow apply shows what it waits on.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.total = 0
        self._bar: Any = None

    def _shown(self) -> Any:
        if self._bar is None and self.enabled and self.total > 5:
            self._bar = click.progressbar(
                length=self.total,
                label="Applying",
                file=sys.stderr,
                item_show_func=_describe_change,
            )
            self._bar.__enter__()
        return self._bar

    def start(self, change: Change) -> None:
        bar = self._shown()
        if bar is not None:
            bar.current_item = change
            bar.render_progress()

    def update(self, change: Change, status: ChangeStatus) -> None:
        bar = self._shown()
        if bar is not None:
            bar.update(1)
            if status == "failed":  # said as it happens; the summary gives the reason
                self.note(f"  failed: {change.action} {change.key}")

    def note(self, message: str) -> None:
        """A line of its own, below the bar if one is drawn."""
        click.echo(("\n" if self._bar is not None else "") + message, err=True)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)


def _echo_outcome(report: RunReport) -> None:
    result = report.result
    if result is not None:
        unknown = f", unknown {result.unknown}" if result.unknown else ""
        click.echo(
            f"Applied {result.applied}, failed {result.failed}, skipped {result.skipped}{unknown}"
            f" (run {report.run_id}, {report.duration_s:.1f}s)."
        )
        for key, message in result.failures:
            click.echo(f"  {key}: {message}", err=True)
    if result is None and report.outcome in ("declined", "interrupted"):
        click.echo("Nothing applied.")
    if report.outcome == "declined":
        return
    if report.error and report.outcome != "failed":
        click.echo(f"Error: {report.error}", err=True)
    elif report.plan is not None and report.plan.errors:
        count = len(report.plan.errors)
        which = (
            "1 group has an error and was left as it is"
            if count == 1
            else f"{count} groups have errors and were left as they are"
        )
        click.echo(f"{which} (see Errors in the plan above).", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user error prints one clear message and exits with its code, no traceback."""
    try:
        code = cli.main(args=argv, prog_name="groupsync", standalone_mode=False)
    except click.exceptions.Abort as e:  # click's answer to Ctrl-C, or to an aborted prompt
        click.echo("Aborted.", err=True)
        sys.exit(ExitCode.INTERRUPTED if isinstance(e.__context__, KeyboardInterrupt) else 1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        # click's own usage exit code is 2, which `plan --detailed-exitcode` means as "changes
        # pending" (ARCHITECTURE.md, "Outcomes and exit codes").
        sys.exit(ExitCode.USAGE if isinstance(e, click.UsageError) else 1)
    except GroupsyncError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
