"""``ScheduleCatalogue``, ``ScheduleStore`` and ``RunStore`` on tortoise: schedules and their
runs. A run's row is unique per (schedule, fire time), so a slot runs once whatever the number
of bot processes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from tortoise.exceptions import IntegrityError

from core.catalogue.models import ScheduleRow, ScheduleRunRow
from core.domain.retention import RetentionPolicy
from core.domain.schedule import Cadence, Schedule, ScheduleTask, When
from core.errors import InvalidInput
from core.ports import Clock


def name_taken(name: str) -> InvalidInput:
    return InvalidInput(f"a schedule named {name!r} exists already; choose another name")


def _schedule(row: ScheduleRow) -> Schedule:
    policy = None
    if row.policy:
        policy = RetentionPolicy(**{str(k): v for k, v in row.policy.items()})  # type: ignore[arg-type]
    return Schedule(
        id=row.id,
        name=row.name,
        vms=row.vms,
        when=When(
            Cadence(row.cadence),
            row.minute,
            row.hour,
            row.day,
            row.month,
            row.day_of_week,
            row.timezone,
        ),
        policy=policy,
        channel=row.channel,
        owner=row.owner,
        created_at=row.created_at,
        grace=timedelta(seconds=row.grace_seconds),
        enabled=row.enabled,
        last_fire=row.last_fire,
        task=ScheduleTask(row.task or ScheduleTask.SNAPSHOT.value),
        archive=bool(row.archive),
    )


class TortoiseSchedules:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def add_schedule(self, schedule: Schedule) -> Schedule:
        w = schedule.when
        try:
            row = await ScheduleRow.create(
                name=schedule.name,
                vms=schedule.vms,
                cadence=w.cadence.value,
                minute=w.minute,
                hour=w.hour,
                day=w.day,
                month=w.month,
                day_of_week=w.day_of_week,
                timezone=w.timezone,
                policy=asdict(schedule.policy) if schedule.policy else None,
                channel=schedule.channel,
                owner=schedule.owner,
                created_at=schedule.created_at,
                grace_seconds=int(schedule.grace.total_seconds()),
                enabled=schedule.enabled,
                last_fire=schedule.last_fire,
                task=schedule.task.value,
                archive=schedule.archive,
            )
        except IntegrityError:
            raise name_taken(schedule.name) from None
        return _schedule(row)

    async def schedules(self) -> list[Schedule]:
        return [_schedule(r) for r in await ScheduleRow.all().order_by("id")]

    async def remove_schedule(self, schedule_id: int) -> bool:
        return bool(await ScheduleRow.filter(id=schedule_id).delete())

    async def set_last_fire(self, schedule_id: int, fire_time: datetime) -> None:
        # Only forwards: a late, slower process must not move the mark back.
        await ScheduleRow.filter(id=schedule_id, last_fire__isnull=True).update(last_fire=fire_time)
        await ScheduleRow.filter(id=schedule_id, last_fire__lt=fire_time).update(
            last_fire=fire_time
        )

    async def begin_run(self, schedule_id: int, fire_time: datetime, owner: str) -> int | None:
        try:
            row = await ScheduleRunRow.create(
                schedule_id=schedule_id,
                fire_time=fire_time,
                owner=owner,
                started_at=self._clock.now(),
                status="running",
            )
        except IntegrityError:
            return None
        return row.id

    async def finish_run(self, run_id: int, status: str, report: dict[str, object]) -> None:
        await ScheduleRunRow.filter(id=run_id).update(
            status=status, report=report, finished_at=self._clock.now()
        )

    async def interrupt_runs(self, owner: str) -> int:
        # A run that was merely slow (not dead) still records its real end when it finishes.
        return (
            await ScheduleRunRow.filter(status="running")
            .exclude(owner=owner)
            .update(status="interrupted", finished_at=self._clock.now())
        )

    async def running_run(self, schedule_id: int) -> datetime | None:
        row = await ScheduleRunRow.filter(schedule_id=schedule_id, status="running").first()
        return None if row is None else row.fire_time

    async def runs(self, schedule_id: int | None = None) -> list[tuple[int, datetime, str]]:
        query = (
            ScheduleRunRow.all()
            if schedule_id is None
            else ScheduleRunRow.filter(schedule_id=schedule_id)
        )
        return [(r.schedule_id, r.fire_time, r.status) for r in await query.order_by("fire_time")]
