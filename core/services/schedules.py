"""Schedules and holds: what people manage; the ``scheduler`` package runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from core.domain.operation import Actor
from core.domain.retention import RetentionPolicy
from core.domain.schedule import (
    DEFAULT_GRACE,
    Schedule,
    When,
    validate_schedule_name,
    validate_vm_selector,
)
from core.domain.snapshot import Hold, HoldKind, Snapshot
from core.errors import InvalidInput, ScheduleNotFound
from core.ports import Clock
from core.services.snapshots import SnapshotService


class ScheduleCatalogue(Protocol):
    async def add_schedule(self, schedule: Schedule) -> Schedule: ...

    async def schedules(self) -> list[Schedule]: ...

    async def remove_schedule(self, schedule_id: int) -> bool: ...

    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None: ...


class ScheduleService:
    """Add, list and remove schedules; every change tells the scheduler to rebuild its jobs."""

    def __init__(self, catalogue: ScheduleCatalogue, clock: Clock) -> None:
        self._catalogue = catalogue
        self._clock = clock
        self.on_change: list[Callable[[], Awaitable[None]]] = []

    async def add(
        self,
        name: str,
        vms: str,
        when: When,
        policy: RetentionPolicy | None,
        channel: str | None,
        actor: Actor,
    ) -> Schedule:
        if policy is not None:
            policy.validate()
        schedule = await self._catalogue.add_schedule(
            Schedule(
                id=0,
                name=validate_schedule_name(name),
                vms=validate_vm_selector(vms),
                when=when,
                policy=policy,
                channel=channel,
                owner=actor.user,
                created_at=self._clock.now(),
                grace=DEFAULT_GRACE,
            )
        )
        await self._changed()
        return schedule

    async def list(self) -> list[Schedule]:
        return await self._catalogue.schedules()

    async def find(self, key: str) -> Schedule:
        """By id or by name."""
        schedules = await self._catalogue.schedules()
        for s in schedules:
            if key == str(s.id) or key == s.name:
                return s
        raise ScheduleNotFound(key, [f"{s.id} ({s.name})" for s in schedules])

    async def remove(self, key: str) -> Schedule:
        schedule = await self.find(key)
        await self._catalogue.remove_schedule(schedule.id)
        await self._changed()
        return schedule

    async def _changed(self) -> None:
        for hook in self.on_change:
            await hook()


class HoldService:
    """Keep snapshots whatever retention says: until a date, until verified, or until released."""

    def __init__(self, snapshots: SnapshotService, catalogue: ScheduleCatalogue, clock: Clock):
        self._snapshots = snapshots
        self._catalogue = catalogue
        self._clock = clock

    async def hold(
        self, vm: str, label: str, kind: HoldKind, until: datetime | None, actor: Actor
    ) -> Snapshot:
        if kind is HoldKind.UNTIL and (until is None or until <= self._clock.now()):
            raise InvalidInput("--until needs a date in the future, e.g. --until 2026-12-31")
        snap = await self._snapshots.find(vm, label)
        await self._catalogue.set_hold(snap.vm_uuid, snap.libvirt_name, Hold(kind, until))
        return await self._snapshots.find(vm, label)

    async def release(self, vm: str, label: str, actor: Actor) -> Snapshot:
        snap = await self._snapshots.find(vm, label)
        await self._catalogue.set_hold(snap.vm_uuid, snap.libvirt_name, None)
        return await self._snapshots.find(vm, label)
