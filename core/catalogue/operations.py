"""``OperationStore`` on tortoise: the audit trail of operations and the per-VM locks.

A lock is a row whose primary key is the VM: a second lock on the same VM is impossible on
SQLite and PostgreSQL alike, and, being a row, it survives a crash and is reconciled at start-up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, overload

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core.catalogue.clock import TortoiseDatabaseClock, aware
from core.catalogue.models import OperationRow, VmLockRow
from core.catalogue.snapshots import TortoiseSnapshots
from core.domain.operation import Operation, OperationKind, OperationStatus, Stage
from core.domain.snapshot import Snapshot
from core.errors import LockHolder, VmBusy
from core.ports import Clock, RunningOperation

# A sync's lock row is told from an operation's by this prefix of its operation id.
SYNC_LOCK_PREFIX = "sync-"
# How long an operation waits for a listing's sync of its VM before it is told "busy".
SYNC_WAIT_SECONDS = 10.0
# A sync lock this old (database clock) belongs to a process that died mid-sync.
STALE_SYNC = timedelta(seconds=60)


def sync_token() -> str:
    """A fresh sync lock's operation id (32 characters, as an operation's)."""
    return SYNC_LOCK_PREFIX + uuid.uuid4().hex[: 32 - len(SYNC_LOCK_PREFIX)]


@overload
def _fit(text: str, limit: int) -> str: ...


@overload
def _fit(text: str | None, limit: int) -> str | None: ...


def _fit(text: str | None, limit: int) -> str | None:
    """Audit fields hold what people typed; a long paste is cut, never refused (the refusal
    of the request itself must still be recorded)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def fitted(op: Operation) -> Operation:
    """``op`` with its typed-in fields cut to what the audit trail keeps."""
    return replace(
        op,
        vm_uuid=_fit(op.vm_uuid, 36),
        vm_name=_fit(op.vm_name, 255),
        requested_by=_fit(op.requested_by, 255),
        team=_fit(op.team, 64),
        channel=_fit(op.channel, 64),
        snapshot_label=_fit(op.snapshot_label, 255),
        libvirt_name=_fit(op.libvirt_name, 255),
    )


def _operation_fields(operation: Operation) -> dict[str, Any]:
    op = fitted(operation)
    return {
        "id": op.id,
        "kind": op.kind.value,
        "vm_uuid": op.vm_uuid,
        "vm_name": op.vm_name,
        "requested_by": op.requested_by,
        "via": op.via,
        "team": op.team,
        "channel": op.channel,
        "status": op.status.value,
        "started_at": op.started_at,
        "finished_at": op.finished_at,
        "snapshot_label": op.snapshot_label,
        "libvirt_name": op.libvirt_name,
        "stage": op.stage.value if op.stage else None,
        "error": op.error,
        "outcome": op.outcome,
        "details": dict(op.details),
    }


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


def _progress_fields(stage: Stage | None, details: Mapping[str, object] | None) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if stage is not None:
        update["stage"] = stage.value
    if details is not None:
        update["details"] = dict(details)
        if "libvirt_name" in details:
            update["libvirt_name"] = details["libvirt_name"]
    return update


class TortoiseOperations(TortoiseDatabaseClock):
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

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
                    if await OperationRow.exists(id=operation.id):
                        # not the VM's lock but the record clashed: an id used twice is a bug,
                        # and retrying it would loop for ever
                        raise
                    continue  # the holder finished between our insert and our read
                if not lock.operation_id.startswith(SYNC_LOCK_PREFIX):
                    holder = await self._holder(lock)
                    raise VmBusy(operation.vm_name, holder) from None
                # A listing is syncing this VM's rows: it takes well under a second, and a
                # user's operation should wait for it rather than be refused as "busy".
                if now - aware(lock.heartbeat_at) > STALE_SYNC:
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
        token = sync_token()
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
            return LockHolder("an unknown operation", lock.owner, aware(lock.acquired_at))
        return LockHolder(op.kind, op.requested_by, op.started_at)

    async def record_finished(self, operation: Operation) -> None:
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

    async def record_progress(
        self,
        operation_id: str,
        *,
        stage: Stage | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        update = _progress_fields(stage, details)
        if update:
            await OperationRow.filter(id=operation_id, status=OperationStatus.RUNNING.value).update(
                **update
            )

    async def end_operation(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
        details: Mapping[str, object] | None = None,
        made: Snapshot | None = None,
    ) -> bool:
        update = _progress_fields(None, details)
        update.update(
            status=status.value, finished_at=self._clock.now(), outcome=outcome, error=error
        )
        async with in_transaction():
            # As finish_operation: only a running record ends, and only then is the lock (and
            # the snapshot's record) this process's to write.
            if not await OperationRow.filter(
                id=operation_id, status=OperationStatus.RUNNING.value
            ).update(**update):
                return False
            await VmLockRow.filter(operation_id=operation_id).delete()
            if made is not None:
                await TortoiseSnapshots().add_snapshot(made)
        return True

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
        rows = await OperationRow.filter(status=OperationStatus.RUNNING.value)
        # the locks of all of them in one query (listings and Home read this on every view)
        locks = {
            lock.operation_id: lock
            for lock in await VmLockRow.filter(operation_id__in=[row.id for row in rows])
        }
        for row in rows:
            lock = locks.get(row.id)
            result.append(
                RunningOperation(
                    operation=_operation(row),
                    owner=lock.owner if lock else "",
                    heartbeat_at=aware(lock.heartbeat_at) if lock else row.started_at,
                )
            )
        return result

    async def operations(self, vm_uuid: str | None = None, limit: int = 50) -> list[Operation]:
        query = OperationRow.all() if vm_uuid is None else OperationRow.filter(vm_uuid=vm_uuid)
        rows = await query.order_by("-started_at").limit(limit)
        return [_operation(r) for r in rows]
