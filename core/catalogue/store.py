"""``Catalogue`` on tortoise-orm (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from core.catalogue.models import (
    ConfirmationRow,
    LeaseRow,
    OperationRow,
    ScheduleRow,
    ScheduleRunRow,
    SnapshotRow,
    VmLockRow,
)
from core.domain.confirmation import Confirmation, ConfirmationKind
from core.domain.operation import Operation, OperationKind, OperationStatus, Stage
from core.domain.retention import RetentionPolicy
from core.domain.schedule import Cadence, Schedule, When
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    Hold,
    HoldKind,
    Origin,
    Snapshot,
    SnapshotKind,
)
from core.errors import ConfirmationSpent, InvalidInput, LockHolder, VmBusy
from core.ports import Clock, RunningOperation

# A sync's lock row is told from an operation's by this prefix of its operation id.
SYNC_LOCK_PREFIX = "sync-"
# How long an operation waits for a listing's sync of its VM before it is told "busy".
SYNC_WAIT_SECONDS = 10.0
# A sync lock this old (database clock) belongs to a process that died mid-sync.
STALE_SYNC = timedelta(seconds=60)


def _snapshot(row: SnapshotRow) -> Snapshot:
    return Snapshot(
        vm_uuid=row.vm_uuid,
        vm_name=row.vm_name,
        libvirt_name=row.libvirt_name,
        label=row.label,
        description=row.description,
        kind=SnapshotKind(row.kind),
        captured_state=CapturedState(row.captured_state),
        has_memory=row.has_memory,
        created_at=row.created_at,
        created_by=row.created_by,
        origin=Origin(row.origin),
        status=CatalogueStatus(row.status),
        memory_bytes=row.memory_bytes,
        held=row.held,
        hold=None
        if row.hold_kind is None
        else Hold(HoldKind(row.hold_kind), row.hold_until, row.hold_reminded_at),
        host_uuid=row.host_uuid,
        hypervisor_uri=row.hypervisor_uri,
    )


def _operation(row: OperationRow) -> Operation:
    details: dict[str, object] = dict(row.details or {})
    return Operation(
        id=row.id,
        kind=OperationKind(row.kind),
        vm_uuid=row.vm_uuid,
        vm_name=row.vm_name,
        requested_by=row.requested_by,
        via=row.via,
        status=OperationStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        snapshot_label=row.snapshot_label,
        libvirt_name=row.libvirt_name,
        stage=Stage(row.stage) if row.stage else None,
        error=row.error,
        outcome=row.outcome,
        details=details,
        channel=row.channel,
        team=row.team,
    )


def _fit(text: str | None, limit: int) -> str | None:
    """Audit fields hold what people typed; a long paste is cut, never refused (the refusal
    of the request itself must still be recorded)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _operation_fields(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind.value,
        "vm_uuid": _fit(op.vm_uuid, 36),
        "vm_name": _fit(op.vm_name, 255),
        "requested_by": _fit(op.requested_by, 255),
        "via": op.via,
        "team": _fit(op.team, 64),
        "channel": _fit(op.channel, 64),
        "status": op.status.value,
        "started_at": op.started_at,
        "finished_at": op.finished_at,
        "snapshot_label": _fit(op.snapshot_label, 255),
        "libvirt_name": _fit(op.libvirt_name, 255),
        "stage": op.stage.value if op.stage else None,
        "error": op.error,
        "outcome": op.outcome,
        "details": dict(op.details),
    }


def _confirmation(row: ConfirmationRow) -> Confirmation:
    return Confirmation(
        id=row.id,
        kind=ConfirmationKind(row.kind),
        requested_by=row.requested_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        payload=dict(row.payload or {}),
        vm_name=row.vm_name,
        team=row.team,
        channel=row.channel,
        used_at=row.used_at,
        used_by=row.used_by,
    )


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
    )


def _aware(value: object) -> datetime:
    """A timestamp from the database server, as an aware UTC datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class TortoiseCatalogue:
    """The production ``Catalogue``; needs an open database (``core.catalogue.db``)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def snapshots(self, vm_uuid: str | None = None) -> list[Snapshot]:
        query = SnapshotRow.all() if vm_uuid is None else SnapshotRow.filter(vm_uuid=vm_uuid)
        rows = await query.order_by("created_at", "id")
        return [_snapshot(r) for r in rows]

    async def add_snapshot(self, snapshot: Snapshot) -> None:
        await SnapshotRow.create(
            vm_uuid=snapshot.vm_uuid,
            vm_name=snapshot.vm_name,
            libvirt_name=snapshot.libvirt_name,
            label=snapshot.label,
            description=snapshot.description,
            kind=snapshot.kind.value,
            captured_state=snapshot.captured_state.value,
            has_memory=snapshot.has_memory,
            created_at=snapshot.created_at,
            created_by=snapshot.created_by,
            origin=snapshot.origin.value,
            status=snapshot.status.value,
            memory_bytes=snapshot.memory_bytes,
            held=snapshot.held,
            hold_kind=snapshot.hold.kind.value if snapshot.hold else None,
            hold_until=snapshot.hold.until if snapshot.hold else None,
            host_uuid=snapshot.host_uuid,
            hypervisor_uri=snapshot.hypervisor_uri,
        )

    async def claim_host(self, vm_uuid: str, host_uuid: str, hypervisor_uri: str) -> None:
        # Only rows that need it: a listing syncs every VM, and most already say this host.
        await SnapshotRow.filter(
            Q(host_uuid__isnull=True) | Q(host_uuid__not=host_uuid), vm_uuid=vm_uuid
        ).update(host_uuid=host_uuid, hypervisor_uri=hypervisor_uri)

    async def relabel_snapshot(self, vm_uuid: str, libvirt_name: str, label: str) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(label=label)

    async def set_snapshot_status(
        self, vm_uuid: str, libvirt_name: str, status: CatalogueStatus
    ) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(
            status=status.value
        )

    async def set_memory_bytes(self, vm_uuid: str, libvirt_name: str, size: int | None) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(
            memory_bytes=size
        )

    async def remove_snapshot(self, vm_uuid: str, libvirt_name: str) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).delete()

    async def begin_operation(self, operation: Operation, owner: str) -> None:
        deadline = time.monotonic() + SYNC_WAIT_SECONDS
        while True:
            now = await self.database_now()
            try:
                async with in_transaction():
                    await VmLockRow.create(
                        vm_uuid=operation.vm_uuid,
                        operation_id=operation.id,
                        owner=owner,
                        acquired_at=now,
                        heartbeat_at=now,
                    )
                    await OperationRow.create(**_operation_fields(operation))
                return
            except IntegrityError:
                lock = await VmLockRow.get_or_none(vm_uuid=operation.vm_uuid)
                if lock is None:
                    continue  # the holder finished between our insert and our read
                if not lock.operation_id.startswith(SYNC_LOCK_PREFIX):
                    holder = await self._holder(lock)
                    raise VmBusy(operation.vm_name, holder) from None
                # A listing is syncing this VM's rows: it takes well under a second, and a
                # user's operation should wait for it rather than be refused as "busy".
                if now - _aware(lock.heartbeat_at) > STALE_SYNC:
                    # its process died mid-sync; a sync changes nothing in libvirt
                    await VmLockRow.filter(operation_id=lock.operation_id).delete()
                    continue
                if time.monotonic() > deadline:
                    raise VmBusy(
                        operation.vm_name, LockHolder("a catalogue sync", lock.owner, now)
                    ) from None
                await asyncio.sleep(0.05)

    async def lock_for_sync(self, vm_uuid: str, owner: str) -> str | None:
        now = await self.database_now()
        token = SYNC_LOCK_PREFIX + uuid.uuid4().hex[: 32 - len(SYNC_LOCK_PREFIX)]
        try:
            await VmLockRow.create(
                vm_uuid=vm_uuid, operation_id=token, owner=owner, acquired_at=now, heartbeat_at=now
            )
        except IntegrityError:
            return None
        return token

    async def unlock_sync(self, token: str) -> None:
        await VmLockRow.filter(operation_id=token).delete()

    async def _holder(self, lock: VmLockRow) -> LockHolder:
        op = await OperationRow.get_or_none(id=lock.operation_id)
        if op is None:
            return LockHolder("an unknown operation", lock.owner, _aware(lock.acquired_at))
        return LockHolder(op.kind, op.requested_by, op.started_at)

    async def record_rejected(self, operation: Operation) -> None:
        await OperationRow.create(**_operation_fields(operation))

    async def set_stage(self, operation_id: str, stage: Stage) -> None:
        await OperationRow.filter(id=operation_id).update(stage=stage.value)

    async def update_details(self, operation_id: str, details: Mapping[str, object]) -> None:
        row = await OperationRow.get(id=operation_id)
        merged = dict(row.details or {})
        merged.update(details)
        update: dict[str, Any] = {"details": merged}
        if "libvirt_name" in details:
            update["libvirt_name"] = details["libvirt_name"]
        await OperationRow.filter(id=operation_id).update(**update)

    async def heartbeat(self, operation_id: str) -> None:
        await VmLockRow.filter(operation_id=operation_id).update(
            heartbeat_at=await self.database_now()
        )

    async def finish_operation(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> Operation:
        async with in_transaction():
            # Only a running record ends: a process whose lock was taken over (it looked dead)
            # must not overwrite the outcome the takeover established.
            if await OperationRow.filter(
                id=operation_id, status=OperationStatus.RUNNING.value
            ).update(
                status=status.value, finished_at=self._clock.now(), outcome=outcome, error=error
            ):
                await VmLockRow.filter(operation_id=operation_id).delete()
        return _operation(await OperationRow.get(id=operation_id))

    async def take_over(self, operation_id: str, from_owner: str, to_owner: str) -> bool:
        now = await self.database_now()
        if not from_owner:
            # a running record without a lock row (an older release's crash): nothing to claim
            return True
        claimed = await VmLockRow.filter(operation_id=operation_id, owner=from_owner).update(
            owner=to_owner, heartbeat_at=now
        )
        return claimed == 1

    async def running_operations(self) -> list[RunningOperation]:
        result = []
        for row in await OperationRow.filter(status=OperationStatus.RUNNING.value):
            lock = await VmLockRow.get_or_none(operation_id=row.id)
            result.append(
                RunningOperation(
                    operation=_operation(row),
                    owner=lock.owner if lock else "",
                    heartbeat_at=_aware(lock.heartbeat_at) if lock else row.started_at,
                )
            )
        return result

    async def operations(self, vm_uuid: str | None = None, limit: int = 50) -> list[Operation]:
        query = OperationRow.all() if vm_uuid is None else OperationRow.filter(vm_uuid=vm_uuid)
        rows = await query.order_by("-started_at").limit(limit)
        return [_operation(r) for r in rows]

    async def add_confirmation(self, confirmation: Confirmation) -> None:
        c = confirmation
        await ConfirmationRow.create(
            id=c.id,
            kind=c.kind.value,
            requested_by=c.requested_by,
            team=c.team,
            channel=c.channel,
            vm_name=c.vm_name,
            payload=c.payload,
            created_at=c.created_at,
            expires_at=c.expires_at,
        )

    async def claim_confirmation(self, confirmation_id: str, user: str) -> Confirmation:
        row = await ConfirmationRow.get_or_none(id=confirmation_id)
        if row is None:
            raise ConfirmationSpent("an unknown request", "expired")
        action = row.kind
        if row.used_at is not None:
            raise ConfirmationSpent(action, "used", row.used_by)
        if row.requested_by != user:
            raise ConfirmationSpent(action, "not_yours", row.requested_by)
        now = self._clock.now()
        if row.expires_at < now:
            raise ConfirmationSpent(action, "expired")
        # The conditional update is the claim: of two concurrent confirms, one updates a row.
        claimed = await ConfirmationRow.filter(id=confirmation_id, used_at__isnull=True).update(
            used_at=now, used_by=user
        )
        if claimed != 1:
            fresh = await ConfirmationRow.get(id=confirmation_id)
            raise ConfirmationSpent(action, "used", fresh.used_by)
        row.used_at, row.used_by = now, user
        return _confirmation(row)

    async def get_confirmation(self, confirmation_id: str) -> Confirmation | None:
        row = await ConfirmationRow.get_or_none(id=confirmation_id)
        return None if row is None else _confirmation(row)

    # -- holds -----------------------------------------------------------------------------

    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(
            held=hold is not None,
            hold_kind=hold.kind.value if hold else None,
            hold_until=hold.until if hold else None,
            hold_reminded_at=hold.reminded_at if hold else None,
        )

    # -- schedules ---------------------------------------------------------------------------

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
            )
        except IntegrityError:
            raise InvalidInput(
                f"a schedule named {schedule.name!r} exists already; choose another name"
            ) from None
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
        """Claim a schedule's slot; None when another run (of any process) has it."""
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
        """Runs left 'running' by other processes (a leader that died mid-run) are marked
        'interrupted'; a run that was merely slow still records its real end when it finishes."""
        return (
            await ScheduleRunRow.filter(status="running")
            .exclude(owner=owner)
            .update(status="interrupted", finished_at=self._clock.now())
        )

    async def running_run(self, schedule_id: int) -> datetime | None:
        """The fire time of this schedule's run still in progress, if any."""
        row = await ScheduleRunRow.filter(schedule_id=schedule_id, status="running").first()
        return None if row is None else row.fire_time

    async def runs(self, schedule_id: int | None = None) -> list[tuple[int, datetime, str]]:
        query = (
            ScheduleRunRow.all()
            if schedule_id is None
            else ScheduleRunRow.filter(schedule_id=schedule_id)
        )
        return [(r.schedule_id, r.fire_time, r.status) for r in await query.order_by("fire_time")]

    # -- leadership --------------------------------------------------------------------------

    async def database_now(self) -> datetime:
        # The database's clock, not ours: processes on hosts with skewed clocks still agree
        # on when a lease expires or a lock's heartbeat went stale.
        conn = connections.get("default")
        rows = await conn.execute_query_dict("SELECT CURRENT_TIMESTAMP AS now")
        return _aware(rows[0]["now"])

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> int | None:
        """Take or renew the lease; return its fencing token, or None if another holds it."""
        now = await self.database_now()
        expires = now + ttl
        if await LeaseRow.filter(name=name, holder=holder, expires_at__gte=now).update(
            expires_at=expires
        ):
            row = await LeaseRow.get(name=name)
            return int(row.token)
        if await LeaseRow.filter(name=name, expires_at__lt=now).update(
            holder=holder, expires_at=expires, token=F("token") + 1
        ):
            row = await LeaseRow.get(name=name)
            return int(row.token) if row.holder == holder else None
        try:
            await LeaseRow.create(name=name, holder=holder, expires_at=expires, token=1)
        except IntegrityError:
            return None
        return 1

    async def release_lease(self, name: str, holder: str) -> None:
        await LeaseRow.filter(name=name, holder=holder).delete()
