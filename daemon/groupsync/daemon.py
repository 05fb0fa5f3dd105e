"""`groupsync run`: reconcile at start, then on the schedule, until told to stop.

How the pieces meet (see design.md, "Pitfalls already known"):
- One thread, one event loop. The journal's SQLite connection, the scheduler, the signal
  handlers and every reconcile live on it; only the metrics server and `git pull` use threads,
  and neither touches the journal.
- Each reconcile runs in a task of its own (`_current`). The scheduler's job only starts it,
  so `AsyncIOScheduler.shutdown()` (which cancels running coroutine jobs) never cancels a
  reconcile: the daemon drains that one itself, with a deadline, before shutting it down.
- Outages: a run that cannot use the API ends with outcome "error"; after k such runs in a row,
  the next 2^(k-1)-1 ticks are skipped, capped at 15 minutes between attempts
  (`schedule.ticks_to_skip`). A successful run or a reload resets it.
- Reload (SIGHUP) loads config, spec and token anew; anything invalid keeps the running ones
  and logs every problem at file:line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from groupsync.config import Settings, find_config, load_settings, resolve_token
from groupsync.errors import GroupsyncError
from groupsync.gitspec import GitPullError, git_info, git_pull
from groupsync.journal import Journal
from groupsync.logs import log_change, setup_logging
from groupsync.metrics import Metrics, MetricsServer
from groupsync.outcomes import ChangeStatus, ExitCode, Failure, RunOutcome
from groupsync.plan import Change
from groupsync.reconcile import RunReport, reconcile
from groupsync.schedule import make_trigger, period_of, ticks_to_skip
from groupsync.sdnotify import Notifier
from groupsync.secret import Secret
from groupsync.spec import Spec, load_spec

log = logging.getLogger("groupsync.daemon")

DRAIN_TIMEOUT_S = 30.0  # SIGTERM: how long the run in flight may take to finish
CANCEL_TIMEOUT_S = 5.0  # then: how long a cancelled run may take to settle its journal rows
GIT_PULL_TIMEOUT_S = 20.0  # below the drain timeout: a pull in a thread cannot be cancelled
JOB_ID = "reconcile"


@dataclass(frozen=True, slots=True)
class Loaded:
    """Config, spec and token that loaded together; replaced only as a whole, by a good reload."""

    settings: Settings
    spec: Spec
    token: Secret
    source: tuple[str | None, bool | None] = (None, None)
    """(git commit, dirty) of the spec as loaded: what each run journals, even after a newer
    commit on disk failed to load."""


def load_all(config_path: Path) -> Loaded:
    return load_with(load_settings(config_path))


def load_with(settings: Settings) -> Loaded:
    source = git_info(settings.spec.path)
    return Loaded(settings, load_spec(settings.spec.path), resolve_token(settings), source)


def log_problems(headline: str, exc: GroupsyncError) -> None:
    """One log line per problem, each with its file:line, so an operator can fix them all."""
    issues = getattr(exc, "issues", None) or str(exc).splitlines() or [type(exc).__name__]
    for issue in issues:
        log.error("%s: %s", headline, issue)


class Daemon:
    def __init__(
        self,
        config_path: Path,
        loaded: Loaded,
        journal: Journal,
        *,
        once: bool = False,
        notifier: Notifier | None = None,
    ) -> None:
        self.config_path = config_path
        self.loaded = loaded
        self.journal = journal
        self.once = once
        self.notifier = notifier or Notifier()
        schedule = loaded.settings.schedule
        self._trigger = make_trigger(schedule.every, schedule.cron, schedule.jitter)
        self._period = period_of(self._trigger)
        self.metrics = Metrics(max_age_s=self._health_age(loaded.settings))
        self._stop = asyncio.Event()
        self._stopping = False
        self._signals = 0
        self._current: asyncio.Task[RunReport | None] | None = None
        self._last: RunReport | None = None
        self._errors = 0  # runs in a row with outcome "error"
        self._skip = 0  # scheduled ticks still to skip (backoff)
        self._scheduler: AsyncIOScheduler | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def _health_age(self, settings: Settings) -> float:
        """/healthz turns 503 after three periods without a successful run."""
        return 3 * self._period.total_seconds() + settings.schedule.jitter.total_seconds()

    # --- lifecycle ---------------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or, with --once, until the one run ends); the exit code."""
        listen = self.loaded.settings.metrics.listen
        # First, as it may fail (port taken): there is nothing to undo yet.
        server = MetricsServer(self.metrics, listen) if listen and not self.once else None
        if server is not None:
            log.info("metrics and /healthz on %s (port %d)", listen, server.port)
        loop = asyncio.get_running_loop()
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            # With --once a SIGHUP must not kill the run (its default action would).
            loop.add_signal_handler(
                signal.SIGHUP,
                self._on_reload_signal if not self.once else lambda: log.info("--once: no reload"),
            )
            if self.notifier.watchdog_interval_s:
                self._spawn(self._watchdog(self.notifier.watchdog_interval_s))
            self.notifier.ready(status="config and spec loaded; first run starting")
            first = self._start_run("once" if self.once else "startup")
            if not self.once:
                self._start_scheduler()
                await self._stop.wait()
            else:
                stop = self._spawn(self._stop.wait())
                await asyncio.wait({first, stop}, return_when=asyncio.FIRST_COMPLETED)
            return await self._shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if server is not None:
                server.close()

    def _start_scheduler(self) -> None:
        # Started here, inside the running loop: AsyncIOScheduler binds to the loop it starts in.
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_job(
            self._tick,
            self._trigger,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            # APScheduler's default grace of 1 s silently drops a tick that fires while the loop
            # is busy; a late run is still the right run.
            misfire_grace_time=None,
        )
        self._scheduler.start()
        log.info("schedule: %s (UTC)", self._trigger)

    async def _shutdown(self) -> int:
        """Drain the run in flight (bounded), stop the scheduler, report what was left.

        A stop that had to interrupt the run still exits 0 in daemon mode: the stop was asked
        for and done, and the journal says what was interrupted. With --once the exit code is
        the run's, and an interrupted run is an error.
        """
        self._stopping = True
        interrupted = False
        task = self._current
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=DRAIN_TIMEOUT_S)
            if not done:
                log.warning("the run is still going after %.0fs: interrupting it", DRAIN_TIMEOUT_S)
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_TIMEOUT_S)
            interrupted = task.cancelled()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs via call_soon
        if interrupted:
            self.metrics.runs.labels(RunOutcome.INTERRUPTED).inc()
            log.warning("the run in flight was interrupted; the journal records where")
        pending = self.journal.pending_changes()
        if pending:
            log.warning("%d change(s) left pending; the next run settles them", len(pending))
        if self.once:
            report = self._last
            return ExitCode.ERROR if interrupted or report is None else report.exit_code
        log.info("stopped")
        return ExitCode.OK

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "%s: finishing the run in flight (at most %.0fs), then exiting",
                sig.name,
                DRAIN_TIMEOUT_S,
            )
            self._stopping = True
            self.notifier.stopping()
            self._stop.set()
        elif self._current is not None and not self._current.done():
            log.warning("%s again: interrupting the run in flight now", sig.name)
            self._current.cancel()

    async def _watchdog(self, interval_s: float) -> None:
        """Pinged from the loop itself: a stuck loop stops the pings and systemd restarts us."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- runs --------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return self._current is not None and not self._current.done()

    def _start_run(self, trigger: str) -> asyncio.Task[RunReport | None]:
        self._current = asyncio.get_running_loop().create_task(self._run(trigger))
        return self._current

    async def reconcile_now(self, trigger: str = "manual") -> RunReport | None:
        """One run, as a tick would start it but regardless of backoff (tests, benchmarks)."""
        return await self._start_run(trigger)

    async def tick(self) -> RunReport | None:
        """What the scheduler does at each tick; the report if a run was started and finished."""
        before = self._current
        await self._tick()
        if self._current is before or self._current is None:
            return None
        return await self._current

    async def _tick(self) -> None:
        """The scheduler's job: start a run unless stopping, busy, or backing off."""
        if self._stopping:
            return
        if self._busy():
            log.info("tick skipped: the previous run is still going")
            return
        if self._skip > 0:
            self._skip -= 1
            log.info(
                "tick skipped: backing off after %d failed run(s) (%d more to skip)",
                self._errors,
                self._skip,
            )
            return
        # Not awaited: the run belongs to the daemon, which drains it at shutdown, so the
        # scheduler's shutdown (which cancels running coroutine jobs) has nothing to cancel.
        self._start_run("schedule")

    async def _run(self, trigger: str) -> RunReport | None:
        try:
            loaded = await self._pull() if self.loaded.settings.spec.git_pull else self.loaded
            report = await reconcile(
                loaded.settings,
                loaded.spec,
                loaded.token,
                self.journal,
                trigger=trigger,
                on_progress=self._on_change,
                spec_source=loaded.source,
            )
        except Exception as exc:
            # reconcile turns API and apply failures into outcomes; this is a bug, but the daemon
            # must outlive it and try again at the next tick.
            log.exception("run crashed")
            report = RunReport(
                run_id=None, outcome=RunOutcome.ERROR, failure=Failure.BUG, error=f"crash: {exc!r}"
            )
        self._after_run(report)
        return report

    def _on_change(self, change: Change, status: ChangeStatus) -> None:
        log_change(change, status)
        self.metrics.observe_change(change, status)

    def _after_run(self, report: RunReport) -> None:
        self._last = report
        self.metrics.observe_run(report.outcome, report.duration_s, report.plan, report.summary())
        self.metrics.observe_requests(report.api)
        if report.outcome is RunOutcome.ERROR:
            self._errors += 1
            self._skip = ticks_to_skip(self._errors, self._period)
            if report.failure is Failure.AUTH:
                log.critical(
                    "THE eCAMPUS API REFUSED THE TOKEN (401): nothing can be read or applied "
                    "until it is replaced. Put a valid token where api.token_env, "
                    "api.token_file or the ecampus-token credential points, then restart "
                    "(systemctl restart groupsync: credentials are read at start; a token_file "
                    "is also re-read on reload)."
                )
            if not self.once:
                log.warning(
                    "%d failed run(s) in a row: the next %d tick(s) are skipped",
                    self._errors,
                    self._skip,
                )
        else:
            if self._errors:
                log.info("the API is usable again after %d failed run(s)", self._errors)
            self._errors = self._skip = 0
        if report.outcome is RunOutcome.REFUSED:
            log.error(
                "plan REFUSED by a safety limit, nothing applied (this repeats every run until "
                "fixed): %s. Fix the spec, or apply it once by hand with `groupsync apply "
                "--force` if the change is intended.",
                report.error,
            )
        self.metrics.consecutive_errors.set(self._errors)
        stamp = time.strftime("%H:%M:%SZ", time.gmtime())
        self.notifier.status(f"last run {stamp}: {report.summary()}")

    async def _pull(self) -> Loaded:
        """git pull --ff-only, then reload the spec if the commit moved; on failure keep both."""
        path = self.loaded.settings.spec.path
        try:
            commit = await asyncio.to_thread(git_pull, path, timeout=GIT_PULL_TIMEOUT_S)
        except GitPullError as e:
            log.warning("%s; keeping the last good checkout", e)
            return self.loaded
        if commit != self.loaded.source[0]:
            try:
                spec = load_spec(path)
            except GroupsyncError as e:
                # loaded.source stays behind, so this is logged again every run until fixed.
                log_problems(f"spec at commit {commit} is invalid, keeping the last good one", e)
                return self.loaded
            log.info("spec updated to commit %s (%d groups)", commit, len(spec.groups))
            self.loaded = replace(self.loaded, spec=spec, source=git_info(path))
        return self.loaded

    # --- reload ------------------------------------------------------------------------------

    def _on_reload_signal(self) -> None:
        self._spawn(self._reload())

    async def _reload(self) -> None:
        if self._stopping:
            return
        self.notifier.reloading()
        try:
            new = load_all(self.config_path)
        except GroupsyncError as e:
            log_problems("reload refused, the running config and spec stay", e)
            self.notifier.ready(status="reload refused (see the log); running the previous spec")
            return
        self._adopt(new)
        log.info("reloaded: %d groups, spec digest %s", len(new.spec.groups), new.spec.digest[:12])
        self.notifier.ready(status="reloaded; run starting")
        if self._busy() and self._current is not None:
            await asyncio.wait({self._current})
        if not self._stopping and not self._busy():
            self._start_run("reload")

    def _adopt(self, new: Loaded) -> None:
        """Switch to a good reload; what cannot change without a restart is said so."""
        old = self.loaded.settings
        settings = new.settings
        if settings.journal.path != old.journal.path:
            log.warning(
                "journal.path changed: takes effect at the next restart (still %s)",
                old.journal.path,
            )
        if settings.metrics.listen != old.metrics.listen:
            log.warning("metrics.listen changed: takes effect at the next restart")
        if settings.log.format != old.log.format:
            setup_logging(settings.log.format)
        if settings.schedule != old.schedule:
            self._trigger = make_trigger(
                settings.schedule.every, settings.schedule.cron, settings.schedule.jitter
            )
            self._period = period_of(self._trigger)
            self.metrics.max_age_s = self._health_age(settings)
            if self._scheduler is not None:
                self._scheduler.reschedule_job(JOB_ID, trigger=self._trigger)
                log.info("schedule: %s (UTC)", self._trigger)
        # The operator acted (a new token, say): try again at the next tick.
        self._errors = self._skip = 0
        self.loaded = new


def run(config_path: Path | None, *, once: bool = False) -> int:
    """`groupsync run [--once]`: load, lock the journal, serve; the process exit code.

    Startup problems raise GroupsyncError (exit 1, each problem at file:line); a second
    `run`/`apply` on the same journal fails at once on the writer lock.
    """
    path = find_config(config_path)
    settings = load_settings(path)
    setup_logging(settings.log.format)
    journal = Journal.open(settings.journal.path)
    try:
        with journal.writer_lock():
            loaded = load_with(settings)
            log.info(
                "groupsync starting: config %s, spec %s (%d groups), journal %s",
                path,
                settings.spec.path,
                len(loaded.spec.groups),
                settings.journal.path,
            )
            return asyncio.run(Daemon(path, loaded, journal, once=once).serve())
    finally:
        journal.close()
