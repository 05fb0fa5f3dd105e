"""An API outage on a virtual clock: the daemon lives through it, backs off within its cap, and
converges once the API is back.

Minutes of schedule pass in a few seconds: the test is the scheduler (it fires the daemon's job
once per virtual period, as APScheduler would), and the client's retry waits move the virtual
clock on instead of sleeping. The rest is real: HTTP, the journal on disk, and two kinds of
outage. A stopped API (the emulator gone from its port, connections refused) fails each run
within the client's few seconds for a refused connection; a failing one (every answer a 5xx)
keeps each run retrying for the whole retry budget, across many ticks.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from daemon_support import TOKEN, RestartableEmulator, tick
from groupsync.api import ApiError, Client
from groupsync.config import load_settings
from groupsync.daemon import Daemon
from groupsync.loader import Loaded
from groupsync.outcomes import RunOutcome
from groupsync.schedule import BACKOFF_CAP, ticks_to_skip
from groupsync.sdnotify import Notifier
from groupsync.secret import Secret
from groupsync.spec import load_spec
from groupsync.writer import JournalSeat
from helpers import api_client

pytestmark = pytest.mark.anyio

PERIOD_S = 1.0
SPEC = "groups:\n  chess:\n    name: Chess Club\n    members: [ada, bob]\n"
REFUSED_WITHIN_S = 10.0  # a refused connection fails a command within 10 s (issue 10)


class VirtualClock:
    """Virtual seconds: the schedule's ticks, the client's retry waits, and timed events."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.now = 0.0
        self._next_tick = PERIOD_S
        self._events: list[tuple[float, Callable[[], None]]] = []
        self.attempts: list[tuple[float, float, RunOutcome]] = []  # (start, end, outcome)

    def at(self, when: float, event: Callable[[], None]) -> None:
        self._events.append((when, event))
        self._events.sort(key=lambda e: e[0])

    async def sleep(self, seconds: float) -> None:
        """The client's retry wait: the ticks it passes find the run still going."""
        await self.run_until(self.now + seconds)

    async def run_until(self, until: float) -> None:
        while self._next_tick <= until:
            self._move_to(self._next_tick)
            self._next_tick += PERIOD_S
            start = self.now
            report = await tick(self.daemon)
            if report is not None:
                self.attempts.append((start, self.now, report.outcome))
        self._move_to(max(self.now, until))

    def _move_to(self, when: float) -> None:
        while self._events and self._events[0][0] <= when:
            self.now = self._events[0][0]
            self._events.pop(0)[1]()
        self.now = when


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RestartableEmulator]:
    emulator = RestartableEmulator(tmp_path / "emulator.db")
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def daemon(tmp_path: Path, api: RestartableEmulator) -> Iterator[Daemon]:
    (tmp_path / "spec.yaml").write_text(SPEC)
    config = tmp_path / "groupsync.yaml"
    config.write_text(
        f"api:\n  base_url: {api.base_url}\n  timeout_s: 5\n  max_requests_per_s: 1000\n"
        f"spec:\n  path: spec.yaml\nschedule:\n  every: {PERIOD_S:.0f}s\n  jitter: 0s\n"
        "journal:\n  path: journal.db\n"
    )
    settings = load_settings(config)
    seat = JournalSeat.take(settings.journal.path)
    loaded = Loaded(settings, load_spec(settings.spec.path), Secret(TOKEN))
    yield Daemon(config, loaded, seat, notifier=Notifier({}))
    seat.release()


@pytest.fixture
def clock(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    clock = VirtualClock(daemon)
    random.seed(11)  # the client's retry jitter: the same virtual outage every time
    defaults = Client.__init__.__kwdefaults__
    assert defaults is not None and "sleep" in defaults  # the client's seam for retry waits
    monkeypatch.setitem(defaults, "sleep", clock.sleep)
    return clock


async def client_message(base_url: str) -> str:
    """What the client itself says about the dead API: the CLI prints this, as the daemon logs."""
    async with api_client(base_url, TOKEN, max_attempts=1) as client:
        try:
            await client.list_all_groups()
        except ApiError as e:
            return e.message
    pytest.fail("the API answered during the outage")


class Outage(NamedTuple):
    seconds: int
    refused: bool  # the API stopped (connections refused), else up and answering only 5xx


@pytest.mark.parametrize(
    "outage",
    [Outage(30, True), Outage(60 * 60, True), Outage(30, False), Outage(60 * 60, False)],
    ids=["30s-stopped", "1h-stopped-past-the-cap", "30s-failing", "1h-failing-past-the-cap"],
)
async def test_an_outage_is_survived_backed_off_within_the_cap_and_then_converged(
    outage: Outage,
    api: RestartableEmulator,
    daemon: Daemon,
    clock: VirtualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage_s, refused = outage
    caplog.set_level(logging.INFO)
    await clock.run_until(1)
    assert [o for _, _, o in clock.attempts] == [RunOutcome.APPLIED]
    chess_id = api.by_name()["Chess Club"]["id"]

    if refused:
        api.stop()
    else:
        assert api.emu is not None
        api.emu.faults.update(error_fraction=1.0)
    outage_start, outage_end = clock.now, clock.now + outage_s
    dead_message = await client_message(api.base_url)

    def api_back() -> None:
        emu = api.start() if refused else api.emu  # same port, same state file
        assert emu is not None
        emu.faults.update(error_fraction=0.0)
        emu.state.update_group(chess_id, {"name": "Chess (changed during the outage)"})

    clock.at(outage_end, api_back)
    health_midway: list[tuple[bool, str]] = []
    clock.at(outage_start + outage_s / 2, lambda: health_midway.append(daemon.metrics.health()))
    await clock.run_until(outage_end)
    # Runs that ended before the API came back failed; one caught in a short outage may still
    # succeed, its retries outlasting the outage.
    during = [a for a in clock.attempts if outage_start < a[0] and a[1] < outage_end]
    assert all(o is RunOutcome.ERROR for _, _, o in during)
    cap_s = BACKOFF_CAP.total_seconds()
    long_outage = outage_s > 2 * cap_s

    # Each gap is the backoff's: after the k-th failure, skip ticks_to_skip(k) ticks, then run.
    for k, (previous, following) in enumerate(itertools.pairwise(during), start=1):
        gap = following[0] - previous[1]
        ticks = ticks_to_skip(k, daemon.backoff.period) + 1
        assert (ticks - 1) * PERIOD_S < gap <= ticks * PERIOD_S, (k, gap)
        assert gap <= cap_s
    if long_outage:  # long enough to reach the cap, which holds
        assert len(during) >= 5
        assert max(b[0] - a[1] for a, b in itertools.pairwise(during)) > cap_s - 2
        [(ok, why)] = health_midway
        assert not ok and "last run error" in why

    # The API is back: the next allowed attempt converges, at most one capped gap later.
    for _ in range(int(cap_s + 600)):
        if api.by_name().keys() == {"Chess Club"}:
            break
        await clock.run_until(clock.now + 1)
    assert set(api.by_name()) == {"Chess Club"}
    assert clock.attempts[-1][2] is RunOutcome.APPLIED
    assert clock.now - outage_end <= cap_s + 120
    assert daemon.metrics.health()[0]
    assert daemon.backoff.failures == 0

    messages = [r.getMessage() for r in caplog.records]
    assert not any("tick(s)" in m for m in messages)
    busy = [r.levelno for r in caplog.records if "the previous run is still going" in r.message]
    if refused:  # each run gives up on the refused connection within seconds
        assert all(end - start < REFUSED_WITHIN_S for start, end, _ in during)
    else:
        # A run retrying a failing API outlasts many ticks: the first skip is news, the rest warn.
        assert busy[:3] == [logging.INFO, logging.WARNING, logging.WARNING]
    if not long_outage:
        return
    runs = [m for m in messages if "outcome=error" in m]
    if refused:  # the client's own words for the dead API, once per run line, as the CLI says
        assert runs and all(m.count(dead_message) == 1 for m in runs), (dead_message, runs[0])
    assert "1 failed run in a row; next attempt at the next scheduled run" in messages
    assert any(
        m.startswith("2 failed runs in a row; next attempt after skipping 1 ") for m in messages
    )
    assert any(m.startswith("the API is usable again after") for m in messages)
