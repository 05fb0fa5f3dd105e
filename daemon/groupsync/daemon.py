"""`groupsync run`: reconcile at start, then on the schedule, until told to stop.

How the pieces meet:
- One thread, one event loop. The journal's SQLite connection, the scheduler, the signal
  handlers and every reconcile live on it. The HTTP service (groupsync.httpservice), `git pull`
  and reload's loading use threads; of them only the HTTP service reads the journal, through a
  read-only connection of its own, and it sees the rest through one `DaemonView` swapped whole.
- Each reconcile runs in a task of its own (`_current`), with a `RunStop` of its own. The
  scheduler's job only starts it, so `AsyncIOScheduler.shutdown()` (which cancels running
  coroutine jobs) never cancels a reconcile: the daemon stops that one itself. The first SIGTERM
  or SIGINT lets the changes in flight finish (at most `api.timeout_s`) and starts no more; the
  second abandons them at once; a run still going `DRAIN_TIMEOUT_S` after the first is cancelled.
- The pieces with one job each: `JournalSeat` (one writer, even when the journal folder is
  replaced), `Backoff` (ticks skipped after failed runs), `Reloader` (SIGHUP, coalesced, off
  the loop), `SpecPuller` (git pull), `Liveness` (the watchdog is pinged while runs finish).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from groupsync.backoff import Backoff
from groupsync.config import (
    Settings,
    find_config,
    http_listen,
    resolve_http_token,
    resolve_webhook_secrets,
)
from groupsync.errors import GroupsyncError
from groupsync.gitspec import GitPullError, InvalidCommit, SpecPuller
from groupsync.httpservice import HttpService
from groupsync.journal import Journal, JournalError
from groupsync.liveness import Liveness, keep_watchdog
from groupsync.loader import Loaded, load, load_with, read_config
from groupsync.logs import log_change, setup_logging
from groupsync.memtrim import release_free_memory
from groupsync.metrics import Metrics, drifted_keys
from groupsync.outcomes import ChangeStatus, ExitCode, Failure, RunOutcome
from groupsync.plan import Change
from groupsync.reconcile import RunOptions, RunReport, Session
from groupsync.reloader import Reloader
from groupsync.schedule import make_trigger, period_of
from groupsync.sdnotify import Notifier
from groupsync.spec import Spec, refresh_rosters
from groupsync.statuspage import DaemonView
from groupsync.stopping import RunStop
from groupsync.webhookqueue import RepairQueue
from groupsync.webhookrepair import Repairer
from groupsync.webhooks import KEEP_DAYS, WEBHOOK_TRIGGER, Receiver
from groupsync.writer import JournalSeat

log = logging.getLogger("groupsync.daemon")

# SIGTERM's last resort: a run still going this long after the first signal (a timeout_s above it,
# or a run that does not heed its stop) is cancelled.
DRAIN_TIMEOUT_S = 30.0
CANCEL_TIMEOUT_S = 5.0  # then: how long a cancelled run may take to settle its journal rows
GIT_PULL_TIMEOUT_S = 20.0  # below the drain timeout: a pull in a thread cannot be cancelled
# The watchdog allows a run this long without settling a change, and at least a few schedule
# periods: well past reconcile's own run deadline for a plan's reads (60 s and up), so it acts
# only when that deadline did not end the run.
MIN_STALL_S = 600.0
JOB_ID = "reconcile"


def log_problems(headline: str, exc: GroupsyncError) -> None:
    """One log line per problem, each with its file:line, so an operator can fix them all."""
    issues = getattr(exc, "issues", None) or str(exc).splitlines() or [type(exc).__name__]
    for issue in issues:
        log.error("%s: %s", headline, issue)


def stall_limit_s(settings: Settings, period: timedelta) -> float:
    """How long a run may go without settling a change before the daemon counts itself wedged."""
    few_periods = 3 * period.total_seconds() + settings.schedule.jitter.total_seconds()
    return max(MIN_STALL_S, few_periods)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _clock_time(when: datetime) -> str:
    return when.strftime("%H:%M:%SZ")


class State(enum.Enum):
    SERVING = "serving"  # runs at start, on the schedule and after reloads
    DRAINING = "draining"  # asked to stop: no new run or change; the changes in flight may finish
    INTERRUPTING = "interrupting"  # asked again: the changes in flight are abandoned


class Daemon:
    def __init__(
        self,
        config_path: Path,
        loaded: Loaded,
        seat: JournalSeat,
        *,
        once: bool = False,
        notifier: Notifier | None = None,
        stall_after_s: float | None = None,
    ) -> None:
        self.config_path = config_path
        self.loaded = loaded
        self.seat = seat
        self.once = once
        self.notifier = notifier or Notifier()
        self.state = State.SERVING
        schedule = loaded.settings.schedule
        self._trigger = make_trigger(schedule.every, schedule.cron, schedule.jitter)
        self._period = period_of(self._trigger)
        self.backoff = Backoff(self._period)
        self._stall_after_s = stall_after_s
        self.liveness = Liveness(self._stall_limit_s(loaded.settings))
        self.reloader: Reloader[Loaded] = Reloader(
            lambda: load(self.config_path),
            self._adopt,
            self._reload_refused,
            starting=self.notifier.reloading,
        )
        self._puller = SpecPuller(loaded.settings.spec.path, timeout_s=GIT_PULL_TIMEOUT_S)
        self.metrics = Metrics(max_age_s=self._health_age(loaded.settings))
        self.metrics.checks += [seat.problem, self.liveness.stalled]
        self.metrics.journal_writer.set_function(lambda: float(seat.holding))
        self.metrics.run_in_flight.set_function(self.liveness.in_flight_s)
        self._stop = asyncio.Event()
        self._current: asyncio.Task[RunReport | None] | None = None
        self._run_stop = RunStop()  # the stop of the run in flight, or of the last one
        self._queued: str | None = None  # the trigger of a run wanted once the current one ends
        self._busy_ticks = 0  # ticks skipped in a row because a run was still going
        self._said: str | None = None  # the seat's problem, once logged
        self._last: RunReport | None = None
        self.view = DaemonView(
            spec_commit=loaded.source[0],
            spec_dirty=loaded.source[1],
            spec_groups=len(loaded.spec.groups),
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # Held by every run, full or of a few keys: one run writes at a time.
        self._writer = asyncio.Lock()
        self._repair_stop = RunStop()
        hooks = loaded.settings.webhooks
        self.repairs = RepairQueue(capacity=hooks.queue, debounce_s=hooks.debounce.total_seconds())
        self._repairer: Repairer | None = None

    @property
    def journal(self) -> Journal:
        return self.seat.journal

    def _stall_limit_s(self, settings: Settings) -> float:
        return self._stall_after_s or stall_limit_s(settings, self._period)

    def _health_age(self, settings: Settings) -> float:
        """/healthz turns 503 after three periods without a successful run."""
        return 3 * self._period.total_seconds() + settings.schedule.jitter.total_seconds()

    # --- lifecycle ---------------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or, with --once, until the one run ends); the exit code."""
        # First, as it may fail (no token, port taken): there is nothing to undo yet.
        service = self._start_http() if not self.once else None
        if service is not None and service.receiver is not None:
            self._repairer = Repairer(
                self.repairs, self.metrics, lambda: self.journal, self._writer, self._repair
            )
            self._repairer.start()
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
                interval = self.notifier.watchdog_interval_s
                self._spawn(keep_watchdog(self.notifier, self.liveness, interval))
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
            await self.reloader.close()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if service is not None:
                service.close()

    def _start_http(self) -> HttpService | None:
        settings = self.loaded.settings
        listen = http_listen(settings)
        if listen is None:
            return None
        token = resolve_http_token(settings)
        secrets = resolve_webhook_secrets(settings)
        receiver = (
            Receiver(secrets, settings.journal.path, self.repairs, self.metrics)
            if secrets
            else None
        )
        service = HttpService(
            self.metrics, settings.journal.path, lambda: self.view, token=token, receiver=receiver
        )
        port = service.start(listen)
        private = "/state and the status page" if token else "no /state or status page (no token)"
        hooks = ", POST /webhooks/ecampus" if receiver else ""
        log.info("HTTP on %s (port %d): /metrics, /healthz, %s%s", listen, port, private, hooks)
        return service

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
        """Wait for the run in flight to stop (bounded), stop the scheduler, report what was left.

        A stop that interrupted the run still exits 0 in daemon mode: the stop was asked for and
        done, and the journal says what was interrupted. With --once the exit code is the run's:
        130 for a run that was stopped, as for `apply`.
        """
        if self.state is State.SERVING:
            self.state = State.DRAINING
        await self._stop_intake()
        interrupted = False
        task = self._current
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=DRAIN_TIMEOUT_S)
            if not done:
                log.warning("the run is still going after %.0fs: cancelling it", DRAIN_TIMEOUT_S)
                self.state = State.INTERRUPTING
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_TIMEOUT_S)
            interrupted = task.cancelled()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs via call_soon
        if interrupted:
            self.metrics.runs.labels(RunOutcome.INTERRUPTED).inc()
            log.warning("the run in flight was interrupted; the journal records where")
        if self.seat.holding:
            pending = self.journal.pending_changes()
            if pending:
                log.warning("%d change(s) left pending; the next run settles them", len(pending))
        if self.once:
            report = self._last
            if interrupted:
                return ExitCode.INTERRUPTED
            return ExitCode.ERROR if report is None else report.exit_code
        log.info("stopped")
        return ExitCode.OK

    async def _stop_intake(self) -> None:
        """No more reloads or webhook repairs; a repair in flight finishes first (bounded)."""
        await self.reloader.close()
        if self._repairer is not None:
            await self._repairer.close(DRAIN_TIMEOUT_S)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        """The first signal starts no new run or change and gives the changes in flight
        api.timeout_s; the second abandons them (journaled `unknown`, re-read by the next plan)."""
        if self.state is State.SERVING:
            self.state = State.DRAINING
            self.notifier.stopping()
            self._stop.set()
            self._repair_stop.request(
                f"stopped by {sig.name}", grace_s=self.loaded.settings.api.timeout_s
            )
            if self._busy():
                grace_s = self.loaded.settings.api.timeout_s
                log.info(
                    "%s: starting no more changes; the ones in flight get %gs to finish, then"
                    " the daemon exits (a second signal stops them at once)",
                    sig.name,
                    grace_s,
                )
                self._run_stop.request(f"stopped by {sig.name}", grace_s=grace_s)
            else:
                log.info("%s: exiting", sig.name)
        elif self.state is State.DRAINING:
            self._repair_stop.now(f"{sig.name} again")
            if self._busy():
                self.state = State.INTERRUPTING
                log.warning("%s again: abandoning the changes in flight now", sig.name)
                self._run_stop.now(f"{sig.name} again")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- runs --------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return self._current is not None and not self._current.done()

    def _start_run(self, trigger: str) -> asyncio.Task[RunReport | None]:
        self._busy_ticks = 0
        self._run_stop = RunStop()
        self._current = asyncio.get_running_loop().create_task(self._run(trigger, self._run_stop))
        return self._current

    def _request_run(self, trigger: str) -> None:
        """Start a run now, or as soon as the one in flight ends."""
        if self.state is not State.SERVING:
            return
        if self._busy():
            self._queued = trigger
        else:
            self._start_run(trigger)

    async def _tick(self) -> None:
        """The scheduler's job: start a run unless stopping, busy, or backing off."""
        if self.state is not State.SERVING:
            return
        if self._busy():
            self._busy_ticks += 1
            # The first is normal (a run longer than the period); more in a row are not.
            level = logging.INFO if self._busy_ticks == 1 else logging.WARNING
            log.log(
                level,
                "tick skipped: the previous run is still going (for %.0fs)",
                self.liveness.in_flight_s(),
            )
            return
        if self.backoff.skip_tick():
            log.info(
                "tick skipped: backing off after %s (%d more to skip)",
                _plural(self.backoff.failures, "failed run"),
                self.backoff.to_skip,
            )
            return
        # Not awaited: the run belongs to the daemon, which drains it at shutdown, so the
        # scheduler's shutdown (which cancels running coroutine jobs) has nothing to cancel.
        self._start_run("schedule")

    async def _run(self, trigger: str, stop: RunStop) -> RunReport | None:
        if not self.seat.ready():
            problem = self.seat.problem()
            if problem != self._said:  # once per state, not at every tick
                log.error("no run: %s", problem)
                self.notifier.status(f"no run: {problem}")
                self._said = problem
            return None
        async with self._writer:
            self.liveness.started()
            try:
                report = await self._reconcile(trigger, stop)
            finally:
                self.liveness.finished()
        self._after_run(report)
        # Kept until the next run (here and by the task): the outcome, not the plan and what
        # was applied, which after an adoption are 100,000 changes and groups.
        self._last = report = replace(report, plan=None, result=None)
        release_free_memory()
        queued, self._queued = self._queued, None
        if queued is not None:
            self._request_run(queued)
        return report

    async def _reconcile(self, trigger: str, stop: RunStop) -> RunReport:
        try:
            loaded = await self._pull() if self.loaded.settings.spec.git_pull else self.loaded
            spec = await self._read_rosters(loaded.spec)
            if spec is None:
                return RunReport(
                    run_id=None,
                    outcome=RunOutcome.ERROR,
                    failure=Failure.ROSTER,
                    error="a roster could not be read (see the log)",
                )
            loaded = self._keep_rosters_read(loaded, spec)
            session = Session(loaded.settings, loaded.token, self.journal)
            options = RunOptions(
                trigger=trigger, on_progress=self._on_change, spec_source=loaded.source, stop=stop
            )
            return await session.reconcile(spec, options)
        except GroupsyncError as exc:
            # reconcile makes every other failure the run's outcome: this is the journal failing
            # to record the run (a full disk, a replaced file). Its message says what to do.
            log.error("%s", exc, extra={"failure": Failure.JOURNAL})
            return RunReport(
                run_id=None, outcome=RunOutcome.ERROR, failure=Failure.JOURNAL, error=str(exc)
            )
        except Exception as exc:
            # reconcile turns API and apply failures into outcomes; this is a bug, but the daemon
            # must outlive it and try again at the next tick.
            log.exception("run crashed")
            return RunReport(
                run_id=None, outcome=RunOutcome.ERROR, failure=Failure.BUG, error=f"crash: {exc!r}"
            )

    async def _read_rosters(self, spec: Spec) -> Spec | None:
        """The spec with its rosters read afresh, as every run needs (no SIGHUP: registrars
        export daily); None, each problem logged, when one cannot be read whole."""
        try:
            return await asyncio.to_thread(refresh_rosters, spec)
        except GroupsyncError as exc:
            log_problems("rosters not read, no run", exc)
            return None

    def _keep_rosters_read(self, loaded: Loaded, spec: Spec) -> Loaded:
        """`loaded` with the spec as this run read its rosters, which the daemon keeps from now
        on (unless a reload replaced `loaded` meanwhile): it holds one spec, not the spec as
        loaded beside the spec as last read, each with every generated group."""
        if spec is loaded.spec:
            return loaded
        read = replace(loaded, spec=spec)
        if self.loaded is loaded:
            self.loaded = read
        return read

    async def _repair(self, keys: frozenset[str]) -> RunReport | None:
        """A journaled run of `keys` alone (a webhook's repair; the Repairer holds the writer
        lock); None when no run may start (stopping, or the journal seat is lost). Keys only a
        full plan can plan (a group deleted by hand, a key the spec dropped) get a full run."""
        if self.state is not State.SERVING or not self.seat.ready():
            return None
        loaded = self.loaded
        self._repair_stop = RunStop()
        options = RunOptions(
            trigger=WEBHOOK_TRIGGER,
            on_progress=self._on_change,
            spec_source=loaded.source,
            stop=self._repair_stop,
            keys=keys,
        )
        session = Session(loaded.settings, loaded.token, self.journal)
        try:
            report = await session.reconcile(loaded.spec, options)
        except GroupsyncError as exc:
            log.error("%s", exc, extra={"failure": Failure.JOURNAL})
            return None
        self.metrics.observe_requests(report.api)
        if report.deferred:
            log.info("webhook: %s need a full run", ", ".join(sorted(report.deferred)))
            self._request_run(WEBHOOK_TRIGGER)
        return report

    def _prune_events(self) -> None:
        cutoff = time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - KEEP_DAYS * 86400)
        )
        try:
            self.journal.prune_events(cutoff)
        except JournalError as exc:
            log.warning("%s", exc)

    def _on_change(self, change: Change, status: ChangeStatus) -> None:
        log_change(change, status)
        self.metrics.observe_change(change, status)
        self.liveness.progressed()

    def _after_run(self, report: RunReport) -> None:
        if self.seat.holding:
            self._prune_events()
        self.metrics.observe_run(report.outcome, report.duration_s, report.plan, report.summary())
        self.metrics.observe_requests(report.api)
        drifted = drifted_keys(report.plan) if report.plan is not None else ()
        self.view = self.view.after_run(report, drifted)
        if report.failure is Failure.JOURNAL:
            self.seat.ready()  # a replaced journal is said at crit now, not at the next tick
        self._count_for_backoff(report)
        if report.outcome is RunOutcome.REFUSED:
            # The reasons are on the run's line, just above: said once.
            log.error(
                "plan REFUSED by a safety limit, nothing applied (this repeats every run until "
                "fixed). Fix the spec, or apply it once by hand with `groupsync apply --force` "
                "if the change is intended."
            )
        self.metrics.consecutive_errors.set(self.backoff.failures)
        stamp = time.strftime("%H:%M:%SZ", time.gmtime())
        self.notifier.status(f"last run {stamp}: {report.summary()}")

    def _count_for_backoff(self, report: RunReport) -> None:
        """A run past its deadline is as much a sign of a failing API as an error; a run stopped
        because the daemon is stopping is neither a failure nor a success."""
        if report.outcome not in (RunOutcome.ERROR, RunOutcome.INTERRUPTED):
            failures = self.backoff.reset()
            if failures:
                log.info("the API is usable again after %s", _plural(failures, "failed run"))
        elif report.outcome is RunOutcome.ERROR or self.state is State.SERVING:
            self._after_failure(report)

    def _after_failure(self, report: RunReport) -> None:
        self.backoff.failed()
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
                "%s in a row; next attempt %s",
                _plural(self.backoff.failures, "failed run"),
                self._next_attempt(),
            )

    def _next_attempt(self) -> str:
        """When the next run may start, in words: the backoff's skipped ticks included."""
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None else None
        when: datetime | None = job.next_run_time if job is not None else None
        skip = self.backoff.to_skip
        for _ in range(skip):
            if when is None:
                break
            when = self._trigger.get_next_fire_time(when, when + timedelta(microseconds=1))
        at = f" ({_clock_time(when)})" if when is not None and not skip else ""
        if not skip:
            return f"at the next scheduled run{at}"
        about = f"at {_clock_time(when)}, " if when is not None else ""
        return f"{about}after skipping {_plural(skip, 'scheduled run')} (backoff)"

    async def _pull(self) -> Loaded:
        """git pull --ff-only, then reload the spec if the commit moved; on failure keep both."""
        try:
            pulled = await self._puller.pull(self.loaded.source[0])
        except GitPullError as e:
            log.warning("%s; keeping the last good checkout", e)
            return self.loaded
        except InvalidCommit as e:
            # loaded.source stays behind, so this is logged again every run until fixed.
            headline = f"spec at commit {e.commit} is invalid, keeping the last good one"
            log_problems(headline, e.error)
            return self.loaded
        if pulled is not None:
            spec, source = pulled
            log.info("spec updated to commit %s (%d groups)", source[0], len(spec.groups))
            self.loaded = replace(self.loaded, spec=spec, source=source)
            self._show_spec()
        return self.loaded

    def _show_spec(self) -> None:
        commit, dirty = self.loaded.source
        groups = len(self.loaded.spec.groups)
        self.view = replace(self.view, spec_commit=commit, spec_dirty=dirty, spec_groups=groups)

    # --- reload ------------------------------------------------------------------------------

    def _on_reload_signal(self) -> None:
        if self.state is State.SERVING:
            self.reloader.request()

    def _reload_refused(self, exc: GroupsyncError) -> None:
        log_problems("reload refused, the running config and spec stay", exc)
        self.notifier.ready(status="reload refused (see the log); running the previous spec")

    def _adopt(self, new: Loaded) -> None:
        """Switch to a good reload, then run it; what cannot change without a restart is said so."""
        if self.state is not State.SERVING:
            return
        old = self.loaded.settings
        settings = new.settings
        if settings.journal.path != old.journal.path:
            log.warning(
                "journal.path changed: takes effect at the next restart (still %s)",
                old.journal.path,
            )
        if (settings.http, settings.metrics) != (old.http, old.metrics):
            log.warning("http (or metrics.listen) changed: takes effect at the next restart")
        if settings.log.format != old.log.format:
            setup_logging(settings.log.format)
        if settings.schedule != old.schedule:
            self._reschedule(settings)
        if settings.spec.path != old.spec.path:
            self._puller = SpecPuller(settings.spec.path, timeout_s=GIT_PULL_TIMEOUT_S)
        # The operator acted (a new token, say): try again at the next tick.
        self.backoff.reset()
        self.loaded = new
        self._show_spec()
        log.info("reloaded: %d groups, spec digest %s", len(new.spec.groups), new.spec.digest[:12])
        self.notifier.ready(status="reloaded; run starting")
        self._request_run("reload")

    def _reschedule(self, settings: Settings) -> None:
        schedule = settings.schedule
        self._trigger = make_trigger(schedule.every, schedule.cron, schedule.jitter)
        self._period = self.backoff.period = period_of(self._trigger)
        self.metrics.max_age_s = self._health_age(settings)
        self.liveness.limit_s = self._stall_limit_s(settings)
        if self._scheduler is not None:
            self._scheduler.reschedule_job(JOB_ID, trigger=self._trigger)
            log.info("schedule: %s (UTC)", self._trigger)


def run(config_path: Path | None, *, once: bool = False) -> int:
    """`groupsync run [--once]`: load, lock the journal, serve; the process exit code.

    Startup problems raise GroupsyncError (exit 1, each problem at file:line); a second
    `run`/`apply` on the same journal fails at once on the writer lock.
    """
    path = find_config(config_path)
    settings = read_config(path)
    setup_logging(settings.log.format)
    seat = JournalSeat.take(settings.journal.path)
    try:
        # No local holds the Loaded: a reload replaces the daemon's, and the spec loaded here
        # must go with it (a reference kept in this frame would keep it for the daemon's life).
        daemon = Daemon(path, load_with(settings), seat, once=once)
        log.info(
            "groupsync starting: config %s, spec %s (%d groups), journal %s",
            path,
            settings.spec.path,
            len(daemon.loaded.spec.groups),
            settings.journal.path,
        )
        return asyncio.run(daemon.serve())
    finally:
        seat.release()
