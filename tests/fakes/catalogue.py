"""An in-memory catalogue: every catalogue port of ``core.ports``, without a database.

It passes the same contract suite as the tortoise catalogue
(tests/contract/test_catalogue_backends.py), so a test may use it where a database adds
nothing but time. What the database does for the tortoise catalogue, this does by hand:

- the unique constraints raise the same ``IntegrityError`` (the services never see another);
- JSON columns (operation details, confirmation payloads, run reports) are copied through JSON,
  so a caller that keeps mutating what it stored, or stores a tuple, sees what a database gives;
- the database's clock is a clock of its own (the real one unless given), not the caller's;
- it yields to the event loop where a database round trip would, between a read and the
  conditional write that depends on it, so concurrent callers interleave as they do in
  production and the conditional writes are what keeps them apart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError

from core.catalogue import operations as tortoise_operations
from core.catalogue.clock import SystemClock
from core.catalogue.confirmations import refuse_unclaimable
from core.catalogue.operations import SYNC_LOCK_PREFIX, fitted, sync_token
from core.catalogue.schedules import name_taken
from core.domain.confirmation import Confirmation, request_from_json, request_to_json
from core.domain.operation import Operation, OperationStatus, Stage
from core.domain.schedule import Schedule
from core.domain.snapshot import CatalogueStatus, Hold, Snapshot, SnapshotKind
from core.domain.usage import SampleKind, UsageSample
from core.errors import ConfirmationSpent, LockHolder, VmBusy
from core.ports import Clock, RunningOperation, SnapshotTally
from tests.fakes.drills import MemoryDrills


def _json(value: Mapping[str, object]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return copied


def _progressed(
    op: Operation, stage: Stage | None, details: Mapping[str, object] | None
) -> Operation:
    """``op`` with ``stage`` and (all of) its ``details`` replaced, where given."""
    if stage is not None:
        op = replace(op, stage=stage)
    if details is not None:
        libvirt_name = details.get("libvirt_name", op.libvirt_name)
        op = replace(
            op,
            details=_json(details),
            libvirt_name=None if libvirt_name is None else str(libvirt_name),
        )
    return op


async def _round_trip() -> None:
    """Where the database catalogue awaits the server: other tasks run meanwhile."""
    await asyncio.sleep(0)


@dataclass(slots=True)
class _Lock:
    operation_id: str
    owner: str
    acquired_at: datetime
    heartbeat_at: datetime


@dataclass(slots=True)
class _Run:
    id: int
    schedule_id: int
    fire_time: datetime
    owner: str
    started_at: datetime
    status: str
    finished_at: datetime | None = None
    report: dict[str, Any] | None = None


@dataclass(slots=True)
class _Lease:
    holder: str
    expires_at: datetime
    token: int


class MemoryCatalogue(MemoryDrills):
    """Snapshots (with holds), operations and locks, confirmations, schedules and runs, leases."""

    def __init__(self, clock: Clock, database_clock: Clock | None = None) -> None:
        self._clock = clock
        self._database_clock = database_clock or SystemClock()
        self._snapshots: list[Snapshot] = []  # in insertion order, as the rows' ids
        self._operations: dict[str, Operation] = {}
        self._locks: dict[str, _Lock] = {}  # by VM uuid: one lock a VM
        self._confirmations: dict[str, Confirmation] = {}
        self._schedules: dict[int, Schedule] = {}
        self._runs: dict[int, _Run] = {}
        self._leases: dict[str, _Lease] = {}
        self._next_schedule = 1
        self._next_run = 1
        self._usage: dict[tuple[date, SampleKind, str], UsageSample] = {}

    async def database_now(self) -> datetime:
        await _round_trip()
        return self._database_clock.now()

    # --- snapshots and holds ------------------------------------------------------------------

    async def snapshots(self, vm_uuid: str | None = None) -> list[Snapshot]:
        await _round_trip()
        chosen = [s for s in self._snapshots if vm_uuid is None or s.vm_uuid == vm_uuid]
        return sorted(chosen, key=lambda s: s.created_at)  # stable: equal times keep their order

    async def snapshot_counts(self) -> dict[str, int]:
        await _round_trip()
        counts: dict[str, int] = {}
        for s in self._snapshots:
            if s.status is CatalogueStatus.PRESENT:
                counts[s.vm_uuid] = counts.get(s.vm_uuid, 0) + 1
        return counts

    async def snapshot_tallies(self) -> dict[str, SnapshotTally]:
        await _round_trip()
        tallies: dict[str, SnapshotTally] = {}
        for s in self._snapshots:
            t = tallies.get(s.vm_uuid) or SnapshotTally(s.vm_name, 0, 0, 0, 0, 0, 0)
            full = s.status is CatalogueStatus.PRESENT and s.kind is SnapshotKind.FULL
            tallies[s.vm_uuid] = SnapshotTally(
                vm_name=max(t.vm_name, s.vm_name),
                present=t.present + (s.status is CatalogueStatus.PRESENT),
                missing=t.missing + (s.status is CatalogueStatus.MISSING),
                damaged=t.damaged + (s.damage is not None),
                held=t.held + s.held,
                full=t.full + full,
                memory_bytes=t.memory_bytes + ((s.memory_bytes or 0) if full else 0),
            )
        return tallies

    async def newest_snapshots(
        self, vm_uuids: Collection[str], per_vm: int
    ) -> dict[str, list[Snapshot]]:
        await _round_trip()
        wanted = set(vm_uuids)
        # Newest first; of equal times the later row (as the database's id orders them).
        ranked = sorted(
            ((s, n) for n, s in enumerate(self._snapshots) if s.vm_uuid in wanted),
            key=lambda pair: (pair[0].created_at, pair[1]),
            reverse=True,
        )
        newest: dict[str, list[Snapshot]] = {}
        for s, _ in ranked:
            kept = newest.setdefault(s.vm_uuid, [])
            if len(kept) < per_vm:
                kept.append(s)
        return {uuid: kept for uuid, kept in newest.items() if kept}

    async def add_snapshot(self, snapshot: Snapshot) -> None:
        await _round_trip()
        for s in self._snapshots:
            if s.vm_uuid == snapshot.vm_uuid and (
                s.libvirt_name == snapshot.libvirt_name or s.label == snapshot.label
            ):
                raise IntegrityError(f"snapshot {snapshot.label!r} of {snapshot.vm_uuid} exists")
        # A new record keeps the hold's kind and date but not when it was last reminded.
        hold = None if snapshot.hold is None else replace(snapshot.hold, reminded_at=None)
        self._snapshots.append(replace(snapshot, hold=hold))

    def _update_snapshot(self, vm_uuid: str, libvirt_name: str, **changes: Any) -> None:
        for n, s in enumerate(self._snapshots):
            if s.vm_uuid == vm_uuid and s.libvirt_name == libvirt_name:
                self._snapshots[n] = replace(s, **changes)

    async def claim_host(self, vm_uuid: str, host_uuid: str, hypervisor_uri: str) -> None:
        await _round_trip()
        for n, s in enumerate(self._snapshots):
            if s.vm_uuid == vm_uuid and s.host_uuid != host_uuid:
                self._snapshots[n] = replace(s, host_uuid=host_uuid, hypervisor_uri=hypervisor_uri)

    async def relabel_snapshot(self, vm_uuid: str, libvirt_name: str, label: str) -> None:
        await _round_trip()
        if any(
            s.vm_uuid == vm_uuid and s.label == label and s.libvirt_name != libvirt_name
            for s in self._snapshots
        ):
            raise IntegrityError(f"snapshot {label!r} of {vm_uuid} exists")
        self._update_snapshot(vm_uuid, libvirt_name, label=label)

    async def set_snapshot_status(
        self, vm_uuid: str, libvirt_name: str, status: CatalogueStatus
    ) -> None:
        await _round_trip()
        self._update_snapshot(vm_uuid, libvirt_name, status=status)

    async def set_memory_bytes(self, vm_uuid: str, libvirt_name: str, size: int | None) -> None:
        await _round_trip()
        self._update_snapshot(vm_uuid, libvirt_name, memory_bytes=size)

    async def set_backup_damage(self, vm_uuid: str, libvirt_name: str, damage: str | None) -> None:
        await _round_trip()
        self._update_snapshot(vm_uuid, libvirt_name, damage=damage)

    async def archive_snapshot(
        self,
        vm_uuid: str,
        libvirt_name: str,
        *,
        point_id: str,
        logical_bytes: int,
        added_bytes: int,
    ) -> None:
        await _round_trip()
        for n, s in enumerate(self._snapshots):
            if (
                s.vm_uuid == vm_uuid
                and s.libvirt_name == libvirt_name
                and s.kind is SnapshotKind.FULL
            ):
                self._snapshots[n] = replace(
                    s,
                    kind=SnapshotKind.ARCHIVED,
                    has_memory=False,
                    memory_bytes=None,
                    point_id=point_id,
                    logical_bytes=logical_bytes,
                    added_bytes=added_bytes,
                )

    async def remove_snapshot(self, vm_uuid: str, libvirt_name: str) -> None:
        await _round_trip()
        self._snapshots = [
            s
            for s in self._snapshots
            if not (s.vm_uuid == vm_uuid and s.libvirt_name == libvirt_name)
        ]

    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None:
        await _round_trip()
        self._update_snapshot(vm_uuid, libvirt_name, held=hold is not None, hold=hold)

    # --- operations and locks -----------------------------------------------------------------

    def _store(self, operation: Operation) -> None:
        if operation.id in self._operations:
            raise IntegrityError(f"operation {operation.id} exists")
        op = fitted(operation)
        self._operations[op.id] = replace(op, details=_json(op.details))

    def _lock_of(self, operation_id: str) -> tuple[str, _Lock] | None:
        for vm_uuid, lock in self._locks.items():
            if lock.operation_id == operation_id:
                return vm_uuid, lock
        return None

    async def begin_operation(self, operation: Operation, owner: str) -> None:
        # Read at call time, as the database catalogue does: a test may shorten the wait.
        deadline = time.monotonic() + tortoise_operations.SYNC_WAIT_SECONDS
        while True:
            now = await self.database_now()
            lock = self._locks.get(operation.vm_uuid)
            if lock is None:
                self._store(operation)
                self._locks[operation.vm_uuid] = _Lock(operation.id, owner, now, now)
                return
            if not lock.operation_id.startswith(SYNC_LOCK_PREFIX):
                raise VmBusy(operation.vm_name, self._holder(lock))
            if now - lock.heartbeat_at > tortoise_operations.STALE_SYNC:
                del self._locks[operation.vm_uuid]
                continue
            if time.monotonic() > deadline:
                raise VmBusy(operation.vm_name, LockHolder("a catalogue sync", lock.owner, now))
            await asyncio.sleep(0.05)

    def _holder(self, lock: _Lock) -> LockHolder:
        op = self._operations.get(lock.operation_id)
        if op is None:
            return LockHolder("an unknown operation", lock.owner, lock.acquired_at)
        return LockHolder(op.kind.value, op.requested_by, op.started_at)

    async def lock_for_sync(self, vm_uuid: str, owner: str) -> str | None:
        now = await self.database_now()
        if vm_uuid in self._locks:
            return None
        token = sync_token()
        self._locks[vm_uuid] = _Lock(token, owner, now, now)
        return token

    async def unlock_sync(self, token: str) -> None:
        await _round_trip()
        found = self._lock_of(token)
        if found is not None:
            del self._locks[found[0]]

    async def record_finished(self, operation: Operation) -> None:
        await _round_trip()
        self._store(operation)

    async def set_stage(self, operation_id: str, stage: Stage) -> None:
        await _round_trip()
        if operation_id in self._operations:
            self._operations[operation_id] = replace(self._operations[operation_id], stage=stage)

    async def update_details(self, operation_id: str, details: Mapping[str, object]) -> None:
        await _round_trip()
        op = self._operations[operation_id]
        merged = _json({**op.details, **details})
        libvirt_name = details.get("libvirt_name", op.libvirt_name)
        self._operations[operation_id] = replace(
            op, details=merged, libvirt_name=None if libvirt_name is None else str(libvirt_name)
        )

    async def record_progress(
        self,
        operation_id: str,
        *,
        stage: Stage | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        await _round_trip()
        op = self._operations.get(operation_id)
        if op is None or op.status is not OperationStatus.RUNNING:
            return
        self._operations[operation_id] = _progressed(op, stage, details)

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
        await _round_trip()
        op = self._operations[operation_id]
        if op.status is not OperationStatus.RUNNING:
            return False
        if made is not None:
            await self.add_snapshot(made)  # raises before anything changed, as a rollback
        self._operations[operation_id] = replace(
            _progressed(op, None, details),
            status=status,
            finished_at=self._clock.now(),
            outcome=outcome,
            error=error,
        )
        found = self._lock_of(operation_id)
        if found is not None:
            del self._locks[found[0]]
        return True

    async def heartbeat(self, operation_id: str) -> None:
        now = await self.database_now()
        found = self._lock_of(operation_id)
        if found is not None:
            found[1].heartbeat_at = now

    async def finish_operation(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> Operation:
        await _round_trip()
        op = self._operations[operation_id]
        # Only a running record ends (see the tortoise catalogue's finish_operation).
        if op.status is OperationStatus.RUNNING:
            op = replace(
                op, status=status, finished_at=self._clock.now(), outcome=outcome, error=error
            )
            self._operations[operation_id] = op
            found = self._lock_of(operation_id)
            if found is not None:
                del self._locks[found[0]]
        return op

    async def take_over(self, operation_id: str, from_owner: str, to_owner: str) -> bool:
        now = await self.database_now()
        if not from_owner:
            return True
        found = self._lock_of(operation_id)
        if found is None or found[1].owner != from_owner:
            return False
        found[1].owner, found[1].heartbeat_at = to_owner, now
        return True

    async def running_operations(self) -> list[RunningOperation]:
        await _round_trip()
        result = []
        for op in self._operations.values():
            if op.status is not OperationStatus.RUNNING:
                continue
            found = self._lock_of(op.id)
            result.append(
                RunningOperation(
                    operation=op,
                    owner=found[1].owner if found else "",
                    heartbeat_at=found[1].heartbeat_at if found else op.started_at,
                )
            )
        return result

    async def operations(self, vm_uuid: str | None = None, limit: int = 50) -> list[Operation]:
        await _round_trip()
        chosen = [o for o in self._operations.values() if vm_uuid is None or o.vm_uuid == vm_uuid]
        return sorted(chosen, key=lambda o: o.started_at, reverse=True)[:limit]

    # --- confirmations ------------------------------------------------------------------------

    async def add_confirmation(self, confirmation: Confirmation) -> None:
        await _round_trip()
        if confirmation.id in self._confirmations:
            raise IntegrityError(f"confirmation {confirmation.id} exists")
        stored = request_from_json(confirmation.kind, _json(request_to_json(confirmation.request)))
        self._confirmations[confirmation.id] = replace(
            confirmation, request=stored, used_at=None, used_by=None
        )

    async def claim_confirmation(self, confirmation_id: str, user: str) -> Confirmation:
        await _round_trip()
        now = self._clock.now()
        pending = refuse_unclaimable(self._confirmations.get(confirmation_id), user, now)
        await _round_trip()
        current = self._confirmations[confirmation_id]
        if current.used_at is not None:  # the conditional update found it claimed meanwhile
            raise ConfirmationSpent(pending.kind.value, "used", current.used_by)
        claimed = replace(current, used_at=now, used_by=user)
        self._confirmations[confirmation_id] = claimed
        return claimed

    async def get_confirmation(self, confirmation_id: str) -> Confirmation | None:
        await _round_trip()
        return self._confirmations.get(confirmation_id)

    # --- schedules and runs -------------------------------------------------------------------

    async def add_schedule(self, schedule: Schedule) -> Schedule:
        await _round_trip()
        if any(s.name == schedule.name for s in self._schedules.values()):
            raise name_taken(schedule.name)
        stored = replace(
            schedule,
            id=self._next_schedule,
            grace=timedelta(seconds=int(schedule.grace.total_seconds())),
        )
        self._next_schedule += 1
        self._schedules[stored.id] = stored
        return stored

    async def schedules(self) -> list[Schedule]:
        await _round_trip()
        return [self._schedules[k] for k in sorted(self._schedules)]

    async def remove_schedule(self, schedule_id: int) -> bool:
        await _round_trip()
        return self._schedules.pop(schedule_id, None) is not None

    async def set_last_fire(self, schedule_id: int, fire_time: datetime) -> None:
        await _round_trip()
        schedule = self._schedules.get(schedule_id)
        if schedule is not None and (schedule.last_fire is None or schedule.last_fire < fire_time):
            self._schedules[schedule_id] = replace(schedule, last_fire=fire_time)

    async def begin_run(self, schedule_id: int, fire_time: datetime, owner: str) -> int | None:
        await _round_trip()
        if any(
            r.schedule_id == schedule_id and r.fire_time == fire_time for r in self._runs.values()
        ):
            return None
        run = _Run(self._next_run, schedule_id, fire_time, owner, self._clock.now(), "running")
        self._next_run += 1
        self._runs[run.id] = run
        return run.id

    async def finish_run(self, run_id: int, status: str, report: dict[str, object]) -> None:
        await _round_trip()
        run = self._runs.get(run_id)
        if run is not None:
            run.status, run.report, run.finished_at = status, _json(report), self._clock.now()

    async def interrupt_runs(self, owner: str) -> int:
        await _round_trip()
        left = [r for r in self._runs.values() if r.status == "running" and r.owner != owner]
        for run in left:
            run.status, run.finished_at = "interrupted", self._clock.now()
        return len(left)

    async def running_run(self, schedule_id: int) -> datetime | None:
        await _round_trip()
        for run in self._runs.values():
            if run.schedule_id == schedule_id and run.status == "running":
                return run.fire_time
        return None

    async def runs(self, schedule_id: int | None = None) -> list[tuple[int, datetime, str]]:
        await _round_trip()
        chosen = [r for r in self._runs.values() if schedule_id in (None, r.schedule_id)]
        return [
            (r.schedule_id, r.fire_time, r.status)
            for r in sorted(chosen, key=lambda r: r.fire_time)
        ]

    # --- leases -------------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> int | None:
        now = await self.database_now()
        lease = self._leases.get(name)
        if lease is None:
            self._leases[name] = _Lease(holder, now + ttl, 1)
            return 1
        if lease.holder == holder and lease.expires_at >= now:
            lease.expires_at = now + ttl
            return lease.token
        if lease.expires_at < now:
            lease.holder, lease.expires_at, lease.token = holder, now + ttl, lease.token + 1
            return lease.token
        return None

    async def release_lease(self, name: str, holder: str) -> None:
        await _round_trip()
        lease = self._leases.get(name)
        if lease is not None and lease.holder == holder:
            del self._leases[name]

    # --- usage samples ------------------------------------------------------------------------

    async def record_usage(self, samples: Sequence[UsageSample]) -> None:
        await _round_trip()
        for sample in samples:
            self._usage[sample.key] = sample

    async def usage_samples(
        self, since: date, kind: SampleKind | None = None, subject: str | None = None
    ) -> list[UsageSample]:
        await _round_trip()
        chosen = [
            s
            for s in self._usage.values()
            if s.day >= since and kind in (None, s.kind) and subject in (None, s.subject)
        ]
        return sorted(chosen, key=lambda s: (s.day, s.kind.value, s.subject))

    async def forget_usage_before(self, day: date) -> int:
        await _round_trip()
        old = [key for key, s in self._usage.items() if s.day < day]
        for key in old:
            del self._usage[key]
        return len(old)
