"""Schedules and holds: what people manage; the ``scheduler`` package runs them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

from core.domain.hosts import qualified
from core.domain.operation import SCHEDULER_VIA, Actor, OperationKind, no_progress
from core.domain.retention import RetentionPolicy
from core.domain.schedule import (
    DEFAULT_GRACE,
    Schedule,
    ScheduleTask,
    When,
    validate_schedule_name,
    validate_vm_selector,
)
from core.domain.snapshot import Hold, HoldKind, Snapshot
from core.errors import CoreError, InvalidInput, ScheduleNotFound, SnapshotNotFound
from core.ports import Authority, Clock, HoldCatalogue, ScheduleCatalogue, Timetable
from core.services.holds import require_hold_right
from core.services.operations import OperationRunner, process_owner
from core.services.snapshots import SnapshotService

logger = logging.getLogger(__name__)

# A verified-hold is reminded this long after it was taken, then again every such period.
HOLD_REMINDER = timedelta(hours=24)
# Who ends an --until hold whose date has passed, in the audit trail.
HOLD_EXPIRY_ACTOR = Actor(user="scheduler:holds", via=SCHEDULER_VIA)


class ScheduleService:
    """Add, list and remove schedules; every change tells the scheduler to rebuild its jobs."""

    def __init__(self, catalogue: ScheduleCatalogue, clock: Clock, timetable: Timetable) -> None:
        self._catalogue = catalogue
        self._clock = clock
        self._timetable = timetable
        self.on_change: list[Callable[[], Awaitable[None]]] = []

    async def add(
        self,
        name: str,
        vms: str,
        when: When,
        policy: RetentionPolicy | None,
        channel: str | None,
        actor: Actor,
        *,
        task: ScheduleTask = ScheduleTask.SNAPSHOT,
        archive: bool = False,
    ) -> Schedule:
        """Store a new schedule. ``task`` says what it does at each time; ``archive`` makes
        its retention move full snapshots to the backup store instead of deleting them."""
        if policy is not None:
            policy.validate()
        if archive and (task is not ScheduleTask.SNAPSHOT or policy is None):
            raise InvalidInput(
                "--archive applies to the retention of a schedule taking full snapshots: give "
                "it with --keep-... and without --incremental or --verify"
            )
        if task is ScheduleTask.DRILL and (policy is not None or archive):
            raise InvalidInput(
                "a drill schedule takes and deletes nothing: drop the --keep-... options"
            )
        if task is ScheduleTask.VERIFY and policy is not None:
            raise InvalidInput(
                "a verification schedule deletes nothing: drop the --keep-... options"
            )
        self._timetable.check(when)  # an impossible cron field is refused before it is stored
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
                task=task,
                archive=archive,
            )
        )
        await self._changed()
        return schedule

    async def list(self) -> list[Schedule]:
        return await self._catalogue.schedules()

    def next_fire(self, schedule: Schedule) -> datetime | None:
        """When the schedule runs next (None: never again)."""
        return self._timetable.next_fire(schedule.when, max(schedule.created_at, self._clock.now()))

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
    """Keep snapshots whatever retention says: until a date, until verified, or until released.

    Placing or releasing a hold needs the snapshot's creator or an admin of its VM (one rule,
    ``core.services.holds``, for the console, slash commands and the Verified button), runs
    under the VM's lock like every operation (so it never interleaves with a delete or a prune's
    deletion, and a busy VM answers "busy"), and is audited, refusals included.
    """

    def __init__(
        self,
        snapshots: SnapshotService,
        catalogue: HoldCatalogue,
        clock: Clock,
        runner: OperationRunner | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._catalogue = catalogue
        self._clock = clock
        # The composition root should pass the shared runner; a runner of its own (same
        # catalogue, so the same VM locks) keeps older wiring working.
        self._runner = runner or OperationRunner(catalogue, clock, process_owner())

    async def hold(
        self,
        vm: str,
        label: str,
        kind: HoldKind,
        until: datetime | None,
        actor: Actor,
        authority: Authority | None = None,
    ) -> Snapshot:
        """Hold a snapshot. ``authority`` None: the local operator (console), every right."""
        problem = None
        if kind is HoldKind.UNTIL and (until is None or until <= self._clock.now()):
            problem = InvalidInput("--until needs a date in the future, e.g. --until 2026-12-31")
        return await self._change(
            OperationKind.HOLD, vm, label, Hold(kind, until), actor, authority, problem
        )

    async def release(
        self, vm: str, label: str, actor: Actor, authority: Authority | None = None
    ) -> Snapshot:
        """End a hold (the Verified button, or ``/snapshot release``)."""
        return await self._change(OperationKind.RELEASE, vm, label, None, actor, authority)

    async def expire(self, snapshot: Snapshot, now: datetime, actor: Actor) -> bool:
        """End ``snapshot``'s ``--until`` hold if its date has passed; False when the hold was
        changed meanwhile (checked under the VM's lock). Audited as a release by ``actor``."""
        vm = await self._snapshots.vm_by_uuid(snapshot.vm_uuid)
        kind = OperationKind.RELEASE
        async with self._runner.run(kind, vm, actor, no_progress, label=snapshot.label) as op:
            await op.record(libvirt_name=snapshot.libvirt_name)
            hold = (await self._current(vm.uuid, qualified(vm.host, vm.name), snapshot)).hold
            if (
                hold is None
                or hold.kind is not HoldKind.UNTIL
                or not hold.until
                or hold.until > now
            ):
                op.outcome = f"{snapshot.label}: the hold changed meanwhile; left as it is"
                return False
            await self._catalogue.set_hold(vm.uuid, snapshot.libvirt_name, None)
            op.outcome = f"{snapshot.label}: {hold.describe()}, which has passed; hold ended"
        return True

    async def end_expired(self, now: datetime) -> list[Snapshot]:
        """End every ``--until`` hold whose date has passed (the scheduler's hourly check);
        return the snapshots whose hold ended. A busy VM is tried again next time."""
        ended = []
        for snap in await self._catalogue.snapshots():
            hold = snap.hold
            if hold is None or hold.kind is not HoldKind.UNTIL or not hold.until:
                continue
            if hold.until > now:
                continue
            try:
                if await self.expire(snap, now, HOLD_EXPIRY_ACTOR):
                    ended.append(snap)
                    logger.info("hold on %s of %s expired", snap.label, snap.vm_name)
            except CoreError as exc:
                logger.info("hold on %s of %s not ended yet: %s", snap.label, snap.vm_name, exc)
        return ended

    async def remind(
        self, now: datetime, send: Callable[[Snapshot], Awaitable[None]]
    ) -> list[Snapshot]:
        """``send`` a reminder for every hold-until-verified not reminded for
        ``HOLD_REMINDER``, and record when; a reminder that could not be sent is tried again
        at the next check."""
        reminded = []
        for snap in await self._catalogue.snapshots():
            hold = snap.hold
            if hold is None or hold.kind is not HoldKind.VERIFIED:
                continue
            if now - (hold.reminded_at or snap.created_at) < HOLD_REMINDER:
                continue
            try:
                await send(snap)
            except Exception:
                logger.exception("could not remind about %s", snap.label)
                continue
            await self._catalogue.set_hold(
                snap.vm_uuid, snap.libvirt_name, replace(hold, reminded_at=now)
            )
            reminded.append(snap)
        return reminded

    async def _change(
        self,
        kind: OperationKind,
        vm_name: str,
        label: str,
        hold: Hold | None,
        actor: Actor,
        authority: Authority | None,
        problem: CoreError | None = None,
    ) -> Snapshot:
        verb = "hold" if hold is not None else "release the hold on"
        async with self._runner.refusals_audited(kind, actor, vm_name) as refusal:
            if problem is not None:
                raise problem
            vm = await self._snapshots.vm(vm_name)
            refusal.vm_uuid = vm.uuid
            named = qualified(vm.host, vm.name)  # this VM, whatever other hosts have
            snap = await self._snapshots.find(named, label)
            await require_hold_right(snap, actor, authority, verb, named)
        async with self._runner.run(kind, vm, actor, no_progress, label=snap.label) as op:
            await op.record(libvirt_name=snap.libvirt_name)
            # Looked up again under the lock: it may have been deleted while we waited.
            await self._current(vm.uuid, named, snap)
            await self._catalogue.set_hold(vm.uuid, snap.libvirt_name, hold)
            op.outcome = f"{snap.label}: {hold.describe() if hold else 'hold released'}"
        return await self._current(vm.uuid, named, snap)

    async def _current(self, vm_uuid: str, vm_name: str, snap: Snapshot) -> Snapshot:
        for row in await self._catalogue.snapshots(vm_uuid):
            if row.libvirt_name == snap.libvirt_name:
                return row
        found = await self._snapshots.find(vm_name, snap.label)  # says who deleted it, if known
        raise SnapshotNotFound(vm_name, snap.label, [found.label])
