"""The daemon's schedule as APScheduler 3 triggers, and the backoff that stretches it on outages.

APScheduler 3's `CronTrigger.from_crontab` numbers weekdays from Monday = 0 (its issue 286,
fixed only in 4.x), so "0 3 * * 1" would run on Tuesdays. Here the day-of-week field is expanded
with crontab's numbering (0 and 7 = Sunday) into day names, which both agree on.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from groupsync.errors import GroupsyncError

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# Backoff: after k runs in a row that could not use the API, the gap to the next attempt is
# 2^(k-1) schedule periods (1, 2, 4, 8, ...), never more than BACKOFF_CAP (or one period, if
# the schedule itself is slower). Ticks inside the gap are skipped.
BACKOFF_CAP = timedelta(minutes=15)


def _day(token: str) -> int:
    name = token.lower()[:3]
    if name in _DAYS:
        return _DAYS.index(name)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"bad day of week {token!r}")


def _expand_days(field: str) -> str:
    """Crontab day-of-week (0-7, names, ranges, lists, steps) -> 'mon,wed' (APScheduler-safe)."""
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {part!r}")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            first, last = _day(a), _day(b)
            if b.strip() == "7":  # "5-7": Friday to Sunday
                last = 7
            if last < first:
                raise ValueError(f"bad range {span!r}")
        else:
            first = _day(span)
            last = 6 if step_text else first
        days.update(d % 7 for d in range(first, last + 1, step))
    return "*" if days == set(range(7)) else ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, *, jitter: timedelta = timedelta(0)) -> CronTrigger:
    """A standard 5-field crontab line, evaluated in UTC.

    The one cron parser: config validation runs it too, so whatever `validate` accepts the
    daemon runs, and back. Raises ValueError saying what is wrong (the caller names the setting).
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    trigger = CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=weekday if weekday == "*" else _expand_days(weekday),
        timezone=UTC,
        jitter=int(jitter.total_seconds()) or None,
    )
    # Five fields name no year, so a line that fires neither now nor later never fires at all
    # ("0 0 30 2 *"): the daemon would wait for ever.
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError("it never fires (no such date)")
    return trigger


def make_trigger(
    every: timedelta | None, cron: str | None, jitter: timedelta = timedelta(0)
) -> BaseTrigger:
    """`cron` wins when both are given; the config loader is expected to refuse that anyway."""
    if cron:
        try:
            return cron_trigger(cron, jitter=jitter)
        except ValueError as e:
            raise GroupsyncError(f"schedule.cron {cron!r}: {e}") from None
    if every is None or every <= timedelta(0):
        raise GroupsyncError("schedule: set either every or cron")
    return IntervalTrigger(
        seconds=every.total_seconds(), jitter=jitter.total_seconds() or None, timezone=UTC
    )


def period_of(trigger: BaseTrigger, now: datetime | None = None) -> timedelta:
    """The usual gap between two runs; for cron, the gap between its next two fire times."""
    if isinstance(trigger, IntervalTrigger):
        return trigger.interval
    now = now or datetime.now(UTC)
    saved, trigger.jitter = getattr(trigger, "jitter", None), None  # type: ignore[attr-defined]
    try:
        first = trigger.get_next_fire_time(None, now)
        second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    finally:
        trigger.jitter = saved  # type: ignore[attr-defined]
    if first is None or second is None:
        return BACKOFF_CAP
    return second - first


def ticks_to_skip(consecutive_errors: int, period: timedelta) -> int:
    """How many scheduled ticks to let pass after the k-th failed run in a row."""
    if consecutive_errors <= 0:
        return 0
    cap = max(1, math.floor(BACKOFF_CAP / period)) if period > timedelta(0) else 1
    gap = min(2 ** min(consecutive_errors - 1, 30), cap)
    return gap - 1
