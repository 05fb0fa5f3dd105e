"""Schedule triggers (crontab weekdays as cron means them, in UTC) and the outage backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from groupsync.errors import GroupsyncError
from groupsync.schedule import cron_trigger, make_trigger, period_of, ticks_to_skip

# A Saturday.
SAT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def fire_days(expr: str, count: int = 7) -> list[str]:
    trigger = cron_trigger(expr)
    out, prev, now = [], None, SAT
    for _ in range(count):
        nxt = trigger.get_next_fire_time(prev, now)
        assert nxt is not None
        out.append(nxt.strftime("%a"))
        prev, now = nxt, nxt + timedelta(seconds=1)
    return out


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("1", {"Mon"}),  # APScheduler 3's own from_crontab would say Tuesday
        ("0", {"Sun"}),
        ("7", {"Sun"}),
        ("1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("5-7", {"Fri", "Sat", "Sun"}),
        ("*/2", {"Sun", "Tue", "Thu", "Sat"}),
        ("mon,wed", {"Mon", "Wed"}),
        ("1/3", {"Mon", "Thu"}),
        ("*", {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}),
    ],
)
def test_crontab_weekdays_mean_what_cron_means(weekday: str, expected: set[str]) -> None:
    assert set(fire_days(f"0 3 * * {weekday}", count=14)) == expected


def test_cron_runs_in_utc() -> None:
    nxt = cron_trigger("30 2 * * *").get_next_fire_time(None, SAT)
    assert nxt == datetime(2026, 11, 29, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "0 3 * * 8", "0 3 * * 5-2"])
def test_bad_cron_is_a_clear_error(expr: str) -> None:
    with pytest.raises(GroupsyncError, match=r"schedule\.cron"):
        make_trigger(None, expr)


def test_a_leap_day_fires_every_four_years_and_is_not_a_never() -> None:
    nxt = cron_trigger("0 0 29 2 *").get_next_fire_time(None, SAT)
    assert nxt == datetime(2028, 2, 29, tzinfo=UTC)


def test_every_with_jitter_is_an_interval_trigger_in_utc() -> None:
    trigger = make_trigger(timedelta(minutes=5), None, timedelta(seconds=30))
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval == timedelta(minutes=5)
    assert trigger.jitter == 30
    assert str(trigger.timezone) == "UTC"
    with pytest.raises(GroupsyncError):
        make_trigger(None, None)


def test_period_of_interval_and_cron() -> None:
    assert period_of(make_trigger(timedelta(seconds=2), None)) == timedelta(seconds=2)
    assert period_of(cron_trigger("*/5 * * * *", jitter=timedelta(seconds=30)), SAT) == timedelta(
        minutes=5
    )
    assert period_of(cron_trigger("0 3 * * *"), SAT) == timedelta(days=1)


def test_backoff_doubles_the_gap_and_is_capped() -> None:
    five = timedelta(minutes=5)
    assert [ticks_to_skip(k, five) for k in range(6)] == [0, 0, 1, 2, 2, 2]
    two = timedelta(seconds=2)
    assert [ticks_to_skip(k, two) for k in range(1, 6)] == [0, 1, 3, 7, 15]
    assert ticks_to_skip(100, two) == 449  # 15 minutes of 2-second ticks
    # A schedule slower than the cap never skips: it is already slow enough.
    assert ticks_to_skip(10, timedelta(hours=1)) == 0
