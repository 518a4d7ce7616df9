"""The use cases: list, snapshot, restore, delete, rename. Every front end calls these."""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from core.domain.backups import PointRef, RestorePointNotFound
from core.domain.hosts import suggestable_names
from core.domain.names import closest, lookalike
from core.domain.operation import (
    Actor,
    OperationKind,
    OperationStatus,
    ProgressCallback,
    Recovery,
    Stage,
    no_progress,
)
from core.domain.planning import check_restore_support, plan_snapshot
from core.domain.snapshot import (
    CatalogueStatus,
    HypervisorSnapshot,
    Origin,
    Snapshot,
    libvirt_description,
    new_libvirt_name,
    validate_description,
    validate_label,
)
from core.domain.vm import FreeSpace, Vm, VmState
from core.errors import (
    CoreError,
    HypervisorBusy,
    HypervisorError,
    HypervisorUnavailable,
    InvalidInput,
    LabelTaken,
    LockHolder,
    OperationFailed,
    RestoreFailed,
    SnapshotMissing,
    SnapshotNotFound,
    VmNotFound,
)
from core.ports import BackupStore, Catalogue, Clock, Hypervisor
from core.services.holds import refuse_if_held
from core.services.operations import OperationHandle, OperationRunner
from core.services.reconcile import (
    answer_after_loss,
    record_memory_sizes,
    record_of,
    revert_landed,
    sync_if_free,
    sync_points,
    sync_vm,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VmSummary:
    """A VM with its snapshot count and, if an operation holds it, who."""

    vm: Vm
    snapshot_count: int
    busy: LockHolder | None


@dataclass(frozen=True, slots=True)
class VmSnapshots:
    """One VM's catalogued snapshots, oldest first, and its disks' allocation on the host.

    ``vm`` is None for a VM that no longer exists in libvirt but still has records.
    """

    vm_name: str
    vm: Vm | None
    snapshots: tuple[Snapshot, ...]
    disk_bytes: int | None
    busy: LockHolder | None


@dataclass(frozen=True, slots=True)
class CreateResult:
    """A snapshot that was taken."""

    snapshot: Snapshot
    seconds: float
    vm_state: VmState
    disk_bytes: int | None


@dataclass(frozen=True, slots=True)
class RestorePreview:
    """What a restore will do, for the confirmation prompt."""

    vm: Vm
    snapshot: Snapshot
    newer: tuple[Snapshot, ...]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """A restore that completed."""

    snapshot: Snapshot
    safety: Snapshot | None
    seconds: float
    vm_state: VmState


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """A deleted snapshot and the host bytes it gave back (None: not measurable)."""

    snapshot: Snapshot
    freed_bytes: int | None
    seconds: float
    already_gone: bool


@dataclass(frozen=True, slots=True)
class RenameResult:
    """A label change."""

    vm_name: str
    old_label: str
    new_label: str


class SnapshotService:
    """Snapshot use cases over a hypervisor and a catalogue."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: Catalogue,
        runner: OperationRunner,
        clock: Clock,
        store: BackupStore | None = None,
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._runner = runner
        self._clock = clock
        # Where incremental snapshots live (None: no SNAPBOT_BACKUP_DIR, so there are none).
        self._store = store

    # -- queries -----------------------------------------------------------------------------

    async def list_vms(self) -> list[VmSummary]:
        """Every VM with its state, snapshot count and lock holder."""
        vms = await self._hv.list_vms()
        busy = await self._busy()
        counts = await self._catalogue.snapshot_counts()
        return [VmSummary(vm, counts.get(vm.uuid, 0), busy.get(vm.uuid)) for vm in vms]

    async def list_snapshots(self, vm_name: str | None = None) -> list[VmSnapshots]:
        """Snapshots of one VM, or of every VM (and of VMs gone from libvirt), synced first."""
        vms = [await self._vm(vm_name)] if vm_name is not None else await self._hv.list_vms()
        result = []
        for vm in list(vms):
            try:
                await sync_if_free(self._hv, self._catalogue, vm, self._runner.owner, self._store)
                disk_bytes = await self._hv.disk_allocation(vm)
            except VmNotFound:
                if vm_name is not None:
                    raise
                vms.remove(vm)  # undefined while we listed: it is gone, not an error
                continue
            result.append(
                VmSnapshots(
                    vm_name=vm.name,
                    vm=vm,
                    snapshots=tuple(await self._catalogue.snapshots(vm.uuid)),
                    disk_bytes=disk_bytes,
                    busy=None,
                )
            )
        # who holds each VM, read after the syncs: a listing shows the locks as they are now
        busy = await self._busy()
        result = [replace(g, busy=busy.get(g.vm.uuid)) if g.vm else g for g in result]
        if vm_name is None:
            known = {vm.uuid for vm in vms}
            await self._adopt_stored_vms(known)
            orphans: dict[str, list[Snapshot]] = {}
            for snap in await self._catalogue.snapshots():
                if snap.vm_uuid not in known:
                    orphans.setdefault(snap.vm_uuid, []).append(snap)
            for snaps in orphans.values():
                result.append(VmSnapshots(snaps[-1].vm_name, None, tuple(snaps), None, None))
        return result

    async def _adopt_stored_vms(self, in_libvirt: set[str]) -> None:
        """List the restore points of VMs neither libvirt nor the catalogue knows (a new
        catalogue over an old store, a VM deleted before its records were made): they are
        what a "restore a deleted VM" needs to find."""
        if self._store is None:
            return
        recorded = {s.vm_uuid for s in await self._catalogue.snapshots()}
        for vm_uuid in await self._store.stored_vms():
            if vm_uuid in in_libvirt or vm_uuid in recorded:
                continue
            points = await self._store.list_points(vm_uuid)
            if not points:
                continue
            token = await self._catalogue.lock_for_sync(vm_uuid, self._runner.owner)
            if token is None:
                continue  # an operation holds it: it owns the rows
            try:
                await sync_points(self._store, self._catalogue, vm_uuid, points[0].vm_name)
            finally:
                await self._catalogue.unlock_sync(token)

    async def restore_preview(
        self, vm_name: str, label: str, *, allow_missing: bool = False
    ) -> RestorePreview:
        """Look up what ``restore`` would do, without doing it (for the confirmation). With
        ``allow_missing`` (a delete) a record whose snapshot vanished from libvirt is found
        too: deleting it clears the record and frees its label."""
        vm = await self._vm(vm_name)
        snaps = await self._catalogue.snapshots(vm.uuid)
        if not snaps:
            await sync_if_free(self._hv, self._catalogue, vm, self._runner.owner, self._store)
            snaps = await self._catalogue.snapshots(vm.uuid)
        target = await self.lookup(vm, snaps, label)
        if target.status is CatalogueStatus.MISSING and not allow_missing:
            raise SnapshotMissing(vm.name, target.label)
        newer = tuple(s for s in snaps if s.created_at > target.created_at and s is not target)
        return RestorePreview(vm, target, newer)

    async def delete_preview(self, vm_name: str, label: str) -> RestorePreview:
        """What ``delete_snapshot`` would delete, for its confirmation: a record whose snapshot
        vanished from libvirt too (deleting clears it); a held snapshot is refused before a
        confirmation is offered (the delete checks again under the lock)."""
        preview = await self.restore_preview(vm_name, label, allow_missing=True)
        if preview.snapshot.status is CatalogueStatus.PRESENT:
            await refuse_if_held(self._catalogue, preview.snapshot)
        return preview

    # -- operations --------------------------------------------------------------------------

    async def create_snapshot(
        self,
        vm_name: str,
        label: str,
        *,
        actor: Actor,
        description: str = "",
        origin: Origin = Origin.MANUAL,
        progress: ProgressCallback = no_progress,
        check_space: bool = True,
    ) -> CreateResult:
        """Take a full snapshot: disk, memory (when running) and configuration. With
        ``check_space`` False the free-space check is skipped (the user's explicit choice where
        space cannot be known)."""
        kind = OperationKind.SNAPSHOT
        async with self._runner.refusals_audited(kind, actor, vm_name):
            label = validate_label(label)
            description = validate_description(description)
        started = time.monotonic()
        async with self.holding(kind, vm_name, actor, progress, label) as (vm, op):
            rows = (await sync_vm(self._hv, self._catalogue, vm)).rows
            snapshot = await self._take_snapshot(
                op, vm, rows, label, description, origin, actor, check_space=check_space
            )
            # Filed with the operation's end, in its transaction (no commit of its own).
            op.made = snapshot
            state = await self._hv.state(vm)
            op.outcome = f"created {snapshot.label} ({snapshot.libvirt_name}); VM {state.value}"
        return CreateResult(
            snapshot, time.monotonic() - started, state, await self._hv.disk_allocation(vm)
        )

    async def restore(
        self,
        vm_name: str,
        label: str,
        *,
        actor: Actor,
        safety_snapshot: bool = True,
        progress: ProgressCallback = no_progress,
        libvirt_name: str | None = None,
    ) -> RestoreResult:
        """Bring the VM back to a snapshot: stop it, revert disk and memory, start it if the
        snapshot was taken running. A safety snapshot of the current state comes first unless
        ``safety_snapshot`` is False. On failure the VM is brought back to a usable state where
        possible and ``RestoreFailed`` says which."""
        kind = OperationKind.RESTORE
        started = time.monotonic()
        async with self.holding(kind, vm_name, actor, progress, label) as (vm, op):
            listing = await self._hv.list_snapshots(vm)
            snaps = (await sync_vm(self._hv, self._catalogue, vm, listing)).rows
            target = await self.lookup(vm, snaps, label, libvirt_name)
            hs = next((s for s in listing if s.libvirt_name == target.libvirt_name), None)
            if hs is None:
                raise SnapshotMissing(vm.name, target.label)
            facts = await self._hv.vm_facts(vm)
            check_restore_support(facts, hs)
            pre_state = facts.vm.state
            # Written with the next stage, before its libvirt call (the safety snapshot's,
            # the stop or the revert): nothing is changed until then.
            op.note(
                libvirt_name=target.libvirt_name,
                pre_state=pre_state.value,
                target_has_memory=hs.has_memory,
            )
            safety = None
            if safety_snapshot:
                safety = await self.take_safety_snapshot(op, vm, target.label, actor, snaps)
            current = safety.libvirt_name if safety else _current(listing)
            state = await self._revert(op, vm, hs, pre_state, safety, current)
            op.outcome = f"restored {target.label}; VM {state.value}"
        return RestoreResult(target, safety, time.monotonic() - started, state)

    async def delete_snapshot(
        self,
        vm_name: str,
        label: str,
        *,
        actor: Actor,
        progress: ProgressCallback = no_progress,
        libvirt_name: str | None = None,
    ) -> DeleteResult:
        """Delete a snapshot from libvirt and the catalogue; measure the space it gave back."""
        kind = OperationKind.DELETE
        started = time.monotonic()
        async with self.holding(kind, vm_name, actor, progress, label) as (vm, op):
            await sync_vm(self._hv, self._catalogue, vm)
            snaps = await self._catalogue.snapshots(vm.uuid)
            target = await self.lookup(vm, snaps, label, libvirt_name)
            await op.record(libvirt_name=target.libvirt_name)
            if target.status is CatalogueStatus.MISSING:
                await self._catalogue.remove_snapshot(vm.uuid, target.libvirt_name)
                where = "the backup store" if target.kind.in_backup_store else "libvirt"
                op.outcome = f"{target.label} was already gone from {where}; record removed"
                return DeleteResult(target, None, time.monotonic() - started, True)
            # Checked under the lock: a hold placed after a prune's plan still wins.
            await refuse_if_held(self._catalogue, target)
            if target.kind.in_backup_store:
                reclaimed = await self._delete_point(op, target)
                op.outcome = (
                    f"deleted {target.label} from the backup store; freed {reclaimed} bytes"
                )
                return DeleteResult(target, reclaimed, time.monotonic() - started, False)
            before = await self._hv.disk_allocation(vm)
            await op.stage(Stage.DELETING)
            try:
                await self._hv.delete_snapshot(vm, target.libvirt_name)
            except HypervisorUnavailable:
                # The answer was lost: once libvirt answers again, what it has decides.
                listing = await answer_after_loss(self._hv, vm)
                if any(s.libvirt_name == target.libvirt_name for s in listing):
                    raise
            await self._catalogue.remove_snapshot(vm.uuid, target.libvirt_name)
            after = await self._hv.disk_allocation(vm)
            freed = None if before is None or after is None else max(before - after, 0)
            op.outcome = f"deleted {target.label}; freed {freed} bytes"
        return DeleteResult(target, freed, time.monotonic() - started, False)

    async def rename_snapshot(
        self, vm_name: str, old_label: str, new_label: str, *, actor: Actor
    ) -> RenameResult:
        """Change a snapshot's label. libvirt's name stays: it is what revert uses."""
        kind = OperationKind.RENAME
        async with self._runner.refusals_audited(kind, actor, vm_name):
            new_label = validate_label(new_label)
        async with self.holding(kind, vm_name, actor, no_progress, old_label) as (vm, op):
            await sync_vm(self._hv, self._catalogue, vm)
            snaps = await self._catalogue.snapshots(vm.uuid)
            target = await self.lookup(vm, snaps, old_label)
            clash = lookalike(new_label, [s.label for s in snaps if s is not target])
            if clash is not None:
                raise LabelTaken(vm.name, new_label, clash)
            await op.record(libvirt_name=target.libvirt_name, new_label=new_label)
            if target.status is CatalogueStatus.PRESENT:
                # libvirt's description carries the label too (a catalogue rebuilt from
                # libvirt reads it there): change it first, so a failure changes nothing.
                try:
                    await self._hv.set_snapshot_description(
                        vm,
                        target.libvirt_name,
                        libvirt_description(new_label, target.description),
                    )
                except HypervisorError as exc:
                    state = await self.state_or_unknown(vm)
                    raise OperationFailed(exc.detail, vm=vm.name, vm_state=state) from exc
            await self._catalogue.relabel_snapshot(vm.uuid, target.libvirt_name, new_label)
            op.outcome = f"renamed {target.label} to {new_label}"
        return RenameResult(vm.name, target.label, new_label)

    async def storage(self, vm: Vm) -> tuple[int | None, FreeSpace | None]:
        """The VM's disk-image allocation and the free space of the tightest place its
        snapshots go to (None: no place can be measured)."""
        facts = await self._hv.vm_facts(vm)
        known = [
            FreeSpace(p.where, p.available_bytes)
            for p in await self._hv.snapshot_places(facts)
            if p.available_bytes is not None
        ]
        tightest = min(known, key=lambda f: f.available_bytes, default=None)
        return await self._hv.disk_allocation(vm), tightest

    async def find(self, vm_name: str, label: str) -> Snapshot:
        """A VM's snapshot by label (``SnapshotNotFound`` lists the closest)."""
        vm = await self._vm(vm_name)
        return await self.lookup(vm, await self._catalogue.snapshots(vm.uuid), label)

    async def sync(self, vm: Vm) -> None:
        """Bring the catalogue in line with libvirt for ``vm``, unless an operation holds it
        (the operation owns the VM's rows until it ends; its own sync is the fresher one)."""
        await sync_if_free(self._hv, self._catalogue, vm, self._runner.owner, self._store)

    async def vm(self, name: str) -> Vm:
        """The VM named ``name``; ``VmNotFound`` lists the closest names."""
        return await self._vm(name)

    async def vm_by_uuid(self, uuid: str) -> Vm:
        """The VM whose UUID a record keeps: the same one whichever hosts share its name."""
        return await self._hv.get_vm_by_uuid(uuid)

    # -- internals ---------------------------------------------------------------------------

    async def lookup(
        self, vm: Vm, snapshots: list[Snapshot], label: str, libvirt_name: str | None = None
    ) -> Snapshot:
        """``_find``, and when it fails, whether the audit trail saw it deleted (by a person or
        by a schedule's prune): the first question of someone missing a snapshot."""
        try:
            return _find(vm, snapshots, label, libvirt_name)
        except SnapshotNotFound as exc:
            for op in await self._catalogue.operations(vm.uuid, limit=500):
                if (
                    op.kind is OperationKind.DELETE
                    and op.status is OperationStatus.SUCCEEDED
                    and op.snapshot_label == label
                ):
                    raise SnapshotNotFound(
                        exc.vm,
                        exc.label,
                        exc.suggestions,
                        deleted_by=op.requested_by,
                        deleted_at=op.finished_at or op.started_at,
                    ) from None
            raise

    async def _vm(self, name: str) -> Vm:
        try:
            return await self._hv.get_vm(name)
        except VmNotFound:
            names = suggestable_names(name, ((v.host, v.name) for v in await self._hv.list_vms()))
            raise VmNotFound(name, closest(name, names)) from None

    @asynccontextmanager
    async def holding(
        self,
        kind: OperationKind,
        vm_name: str,
        actor: Actor,
        progress: ProgressCallback,
        label: str,
    ) -> AsyncIterator[tuple[Vm, OperationHandle]]:
        """The opening every operation shares: find the VM (a refusal is audited), take its
        lock with the operation's record, and check libvirt is not busy with it elsewhere."""
        async with self._runner.refusals_audited(kind, actor, vm_name):
            vm = await self._vm(vm_name)
        # CHECKING is recorded with the operation itself: nothing happens between the two.
        async with self._runner.run(
            kind,
            vm,
            actor,
            progress,
            label=label,
            details=await self._host(vm),
            stage=Stage.CHECKING,
        ) as op:
            await self._refuse_if_libvirt_busy(vm)
            yield vm, op

    async def _refuse_if_libvirt_busy(self, vm: Vm) -> None:
        """Another libvirt client working on the VM (a virsh snapshot, a dump) holds its job
        lock: say "busy" now instead of after libvirt's 30 s wait for that lock."""
        if await self._hv.job_active(vm):
            raise HypervisorBusy(
                vm.name, "libvirt reports a job in progress on it (virsh domjobinfo shows it)"
            )

    async def _host(self, vm: Vm) -> dict[str, object]:
        """Which hypervisor an operation ran on, so a recovery never judges it against
        another one (and, of several hosts, only the VM's host's reconciler takes it)."""
        where = await self._hv.host_of(vm)
        return {"host_uuid": where.uuid, "host": where.name}

    async def _busy(self) -> dict[str, LockHolder]:
        return {
            r.operation.vm_uuid: LockHolder(
                r.operation.kind.value, r.operation.requested_by, r.operation.started_at
            )
            for r in await self._catalogue.running_operations()
        }

    def _safety_label(self, rows: list[Snapshot]) -> str:
        taken = {s.label for s in rows}
        base = "safety-" + self._clock.now().strftime("%Y%m%d-%H%M%S")
        label, n = base, 2
        while lookalike(label, taken) is not None:  # as _take_snapshot judges "taken"
            label, n = f"{base}-{n}", n + 1
        return label

    async def take_safety_snapshot(
        self,
        op: OperationHandle,
        vm: Vm,
        restoring: str,
        actor: Actor,
        rows: list[Snapshot] | None = None,
    ) -> Snapshot:
        """A full snapshot of the VM as it is, taken inside a restore of ``restoring`` (its
        stage, ``SAFETY_SNAPSHOT``, is recorded here, with the details noted before it).
        ``rows``: the VM's records as the restore has them (read when not given)."""
        if rows is None:
            rows = await self._catalogue.snapshots(vm.uuid)
        snapshot = await self._take_snapshot(
            op,
            vm,
            rows,
            self._safety_label(rows),
            f"Safety snapshot taken before restoring {restoring}",
            Origin.SAFETY,
            actor,
            stage=Stage.SAFETY_SNAPSHOT,
            record_as="safety",
        )
        # The restore goes on changing the VM: the record is filed now, not with the end.
        await self._catalogue.add_snapshot(snapshot)
        return snapshot

    async def refuse_taken_label(self, vm: Vm, label: str, rows: list[Snapshot]) -> None:
        """``LabelTaken`` when ``label`` is, or looks like, a label the VM already has."""
        clash = lookalike(label, [s.label for s in rows])
        if clash is not None:
            missing = any(s.label == clash and s.status is CatalogueStatus.MISSING for s in rows)
            raise LabelTaken(vm.name, label, clash, missing=missing)

    async def _take_snapshot(
        self,
        op: OperationHandle,
        vm: Vm,
        rows: list[Snapshot],
        label: str,
        description: str,
        origin: Origin,
        actor: Actor,
        *,
        stage: Stage | None = None,
        record_as: str = "libvirt_name",
        check_space: bool = True,
    ) -> Snapshot:
        """Make the snapshot and return its record, with its memory state's size, for the
        caller to file: ``rows`` are the VM's records (the label is checked against them).
        ``stage`` None: a snapshot of its own, reported in its stages; else the stage it is
        taken in."""
        await self.refuse_taken_label(vm, label, rows)
        facts = await self._hv.vm_facts(vm)
        plan = plan_snapshot(facts, await self._hv.snapshot_places(facts), check_space=check_space)
        name = new_libvirt_name()
        pre_state = facts.vm.state
        # Recorded with the stage, in one write, before the call: a crash recovery that finds
        # no name knows none was made, and one that finds the snapshot files it with the
        # origin it was made for.
        await op.stage(
            stage or (Stage.SAVING_MEMORY_AND_DISK if plan.with_memory else Stage.CAPTURING_DISK),
            **{record_as: name, "pre_state": pre_state.value, "origin": origin.value},
        )
        try:
            hs = await self._hv.create_snapshot(vm, name, libvirt_description(label, description))
        except HypervisorUnavailable as lost:
            # The answer was lost (a daemon restart, a deadline): libvirt decides, once it
            # answers again, whether the snapshot exists.
            found = [s for s in await answer_after_loss(self._hv, vm) if s.libvirt_name == name]
            if not found:
                state = await self._settle(vm, pre_state)
                orphan = await self._discard_orphan(vm, name)
                raise OperationFailed(
                    f"{lost.detail}; once libvirt answered again it had no such snapshot{orphan}",
                    vm=vm.name,
                    vm_state=state,
                ) from lost
            hs = found[0]
        except HypervisorError as exc:
            state = await self._settle(vm, pre_state)
            raise OperationFailed(exc.detail, vm=vm.name, vm_state=state) from exc
        if stage is None:
            await op.stage(Stage.VERIFYING)
        await self._settle(vm, pre_state)
        where = await self._hv.host_of(vm)
        # The new record's memory size goes into it; the others' are written if they changed.
        sizes = await self._hv.memory_state_sizes(vm)
        await record_memory_sizes(self._catalogue, vm, rows, sizes)
        return replace(
            record_of(
                vm,
                hs,
                label=label,
                created_by=actor.user,
                origin=origin,
                host_uuid=where.uuid,
                hypervisor_uri=where.uri,
            ),
            memory_bytes=sizes.get(name),
        )

    async def _delete_point(self, op: OperationHandle, target: Snapshot) -> int:
        """Remove a restore point from the backup store, then the space of the pieces no
        other point needs (pieces a running backup or restore may use are spared)."""
        if self._store is None or target.point_id is None:
            raise InvalidInput(
                f"{target.label} is in the backup store, and this snapbot has none configured "
                "(set SNAPBOT_BACKUP_DIR to the store's directory)"
            )
        await op.stage(Stage.DELETING)
        try:
            await self._store.delete_point(PointRef(target.vm_uuid, target.point_id))
        except RestorePointNotFound:
            logger.info("restore point %s was already gone from the store", target.point_id)
        await self._catalogue.remove_snapshot(target.vm_uuid, target.libvirt_name)
        return (await self._store.collect_garbage()).bytes_freed

    async def _discard_orphan(self, vm: Vm, name: str) -> str:
        """Remove the half-made snapshot QEMU may have left in the image; say what happened."""
        try:
            if await self._hv.discard_orphan(vm, name):
                return (
                    "; the snapshot QEMU had left in the image without libvirt's record was removed"
                )
        except CoreError as exc:
            return (
                f"; QEMU may have left snapshot {name} in the image without libvirt's record, "
                f"and removing it failed ({exc})"
            )
        return ""

    async def _settle(self, vm: Vm, pre_state: VmState) -> str:
        """After a snapshot, put a VM that was running back to running (QEMU pauses a guest on
        ENOSPC, and libvirt's resume can fail); return its state, or "unknown"."""
        try:
            state = await self._hv.state(vm)
            if state is VmState.PAUSED and pre_state is VmState.RUNNING:
                try:
                    await self._hv.resume(vm)
                except CoreError:
                    # libvirt may still say "paused" of a guest whose QEMU died in the save,
                    # until it notices: the state read after the refusal is the one to tell.
                    logger.exception("could not resume %s after a snapshot", vm.name)
                state = await self._hv.state(vm)
            return state.value
        except CoreError:
            logger.exception("could not read the state of %s after a snapshot", vm.name)
            return "unknown"

    async def _revert(
        self,
        op: OperationHandle,
        vm: Vm,
        target: HypervisorSnapshot,
        pre_state: VmState,
        safety: Snapshot | None,
        current_before: str | None,
    ) -> VmState:
        if pre_state.is_active:
            await op.stage(Stage.STOPPING)
            try:
                await self._hv.stop(vm)
            except HypervisorError as exc:
                state = await self.state_or_unknown(vm)
                raise OperationFailed(exc.detail, vm=vm.name, vm_state=state) from exc
        await op.stage(
            Stage.REPLACING_DISK_AND_MEMORY if target.has_memory else Stage.REPLACING_DISK
        )
        # Evidence for a crash recovery: libvirt makes the target current when a revert lands.
        await op.record(revert_issued=True, current_before=current_before)
        try:
            # Paused first, then resumed: the resume is a real "starting" step we can check.
            await self._hv.revert_snapshot(vm, target.libvirt_name, paused=target.has_memory)
            if target.has_memory:
                await op.stage(Stage.STARTING)
                await self._hv.resume(vm)
        except HypervisorUnavailable as lost:
            # The answer was lost, not the revert: once libvirt answers, its evidence says
            # whether the revert landed; only one that did not is recovered from.
            await answer_after_loss(self._hv, vm)
            landed = await revert_landed(
                self._hv,
                vm,
                target.libvirt_name,
                current_before=current_before,
                pre_state=pre_state.value,
                target_has_memory=target.has_memory,
            )
            if landed:
                return await self._start_reverted(op, vm, target)
            if landed is None:
                state = await self.state_or_unknown(vm)
                raise RestoreFailed(vm.name, lost.detail, state, Recovery.UNKNOWN.value) from lost
            await op.stage(Stage.RECOVERING)
            state, recovery = await self._recover(vm, pre_state, safety)
            await op.record(recovery=recovery.value)
            raise RestoreFailed(vm.name, lost.detail, state, recovery.value) from lost
        except HypervisorError as exc:
            await op.stage(Stage.RECOVERING)
            state, recovery = await self._recover(vm, pre_state, safety)
            await op.record(recovery=recovery.value)
            raise RestoreFailed(vm.name, exc.detail, state, recovery.value) from exc
        return await self._hv.state(vm)

    async def _start_reverted(
        self, op: OperationHandle, vm: Vm, target: HypervisorSnapshot
    ) -> VmState:
        """A revert that landed although its answer was lost: resume a memory snapshot's VM,
        which snapbot reverts paused."""
        if target.has_memory and await self._hv.state(vm) is VmState.PAUSED:
            await op.stage(Stage.STARTING)
            await self._hv.resume(vm)
        return await self._hv.state(vm)

    async def _recover(
        self, vm: Vm, pre_state: VmState, safety: Snapshot | None
    ) -> tuple[str, Recovery]:
        """Leave the VM usable after a failed revert: as it was before, where possible."""
        try:
            state = await self._hv.state(vm)
            if state is VmState.RUNNING:
                return state.value, Recovery.NOTHING_NEEDED
            if not pre_state.is_active:
                return state.value, Recovery.LEFT_SHUT_OFF
            if state is VmState.PAUSED:
                await self._hv.resume(vm)
                return (await self._hv.state(vm)).value, Recovery.RESUMED
            if safety is not None:
                try:
                    await self._hv.revert_snapshot(vm, safety.libvirt_name, paused=False)
                    state = await self._hv.state(vm)
                    if state is VmState.RUNNING:
                        return state.value, Recovery.BACK_TO_SAFETY
                except HypervisorError:
                    logger.exception("reverting %s to its safety snapshot failed", vm.name)
            await self._hv.start(vm)
            return (await self._hv.state(vm)).value, Recovery.STARTED
        except CoreError:
            logger.exception("recovery of %s after a failed restore failed", vm.name)
            return await self.state_or_unknown(vm), Recovery.FAILED

    async def state_or_unknown(self, vm: Vm) -> str:
        try:
            return (await self._hv.state(vm)).value
        except CoreError:
            return "unknown"


def _current(listing: list[HypervisorSnapshot]) -> str | None:
    return next((s.libvirt_name for s in listing if s.is_current), None)


def _find(
    vm: Vm, snapshots: list[Snapshot], label: str, libvirt_name: str | None = None
) -> Snapshot:
    """The snapshot labelled ``label``; with ``libvirt_name``, exactly that snapshot (a
    confirmation pins what the person saw, even if it was renamed since)."""
    wanted = unicodedata.normalize("NFC", label)
    for snap in snapshots:
        if snap.libvirt_name == libvirt_name if libvirt_name else snap.label == wanted:
            return snap
    raise SnapshotNotFound(vm.name, label, closest(label, [s.label for s in snapshots]))
