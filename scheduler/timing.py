"""Fire times of a schedule, and what a moment owes it.

apscheduler's ``CronTrigger`` does the calendar arithmetic (time zones, DST); the decisions are
ours and take ``now`` as an argument, so tests drive them with any clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from core.domain.schedule import Schedule, When
from core.errors import InvalidInput

# A run that starts within this of its fire time is on time; later, the slot was missed.
ON_TIME = timedelta(minutes=1)
# Never walk more fire times than this (a per-minute cron down for a month).
MAX_FIRE_TIMES = 10_000


def trigger_for(when: When) -> CronTrigger:
    try:
        return CronTrigger(
            minute=when.minute,
            hour=when.hour,
            day=when.day,
            month=when.month,
            day_of_week=when.day_of_week,
            timezone=ZoneInfo(when.timezone),
        )
    except ValueError as exc:
        raise InvalidInput(f"cannot use that time: {exc}") from exc


def fire_times(when: When, after: datetime, until: datetime) -> list[datetime]:
    """Fire times strictly after ``after`` and at or before ``until``, in UTC."""
    trigger = trigger_for(when)
    times: list[datetime] = []
    previous: datetime | None = None
    start = after + timedelta(seconds=1)
    while len(times) < MAX_FIRE_TIMES:
        nxt = trigger.get_next_fire_time(previous, start)
        if nxt is None or nxt > until:
            break
        times.append(nxt.astimezone(UTC))
        previous, start = nxt, nxt + timedelta(seconds=1)
    return times


def next_fire(when: When, now: datetime) -> datetime | None:
    nxt = trigger_for(when).get_next_fire_time(None, now)
    return None if nxt is None else nxt.astimezone(UTC)


class CronTimetable:
    """The ``Timetable`` port on apscheduler's cron rules: the calendar the scheduler fires
    by, so what a person is told at ``schedule add`` is what will happen."""

    def check(self, when: When) -> None:
        trigger_for(when)

    def next_fire(self, when: When, after: datetime) -> datetime | None:
        return next_fire(when, after)


@dataclass(frozen=True, slots=True)
class Due:
    """What ``now`` owes a schedule: at most one run, and every slot that was missed."""

    schedule: Schedule
    run: datetime | None = None
    catch_up: bool = False
    missed: tuple[datetime, ...] = field(default_factory=tuple)
    # The newest slot this decision settles: the schedule's mark moves here.
    settled: datetime | None = None


def due(schedule: Schedule, now: datetime) -> Due:
    """Slots since the schedule's mark (or its creation): the newest on-time slot runs; if
    none is on time, the newest missed slot still inside the grace window runs once as a
    catch-up; every other slot is reported missed."""
    since = schedule.last_fire or schedule.created_at
    times = fire_times(schedule.when, since, now)
    if not times:
        return Due(schedule)
    on_time = [t for t in times if now - t <= ON_TIME]
    late = [t for t in times if now - t > ON_TIME]
    if on_time:
        return Due(schedule, on_time[-1], False, tuple(late + on_time[:-1]), times[-1])
    if now - late[-1] <= schedule.grace:
        return Due(schedule, late[-1], True, tuple(late), times[-1])
    return Due(schedule, None, False, tuple(late), times[-1])
