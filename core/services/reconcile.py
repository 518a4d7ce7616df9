"""Keep the catalogue true to libvirt, and finish the records of operations a crash interrupted.

libvirt is the source of truth for what exists; the catalogue for labels, authorship and
history. ``sync_vm`` adds snapshots made outside snapbot and marks vanished ones missing (it
never deletes a record: the history of a snapshot outlives it). ``recover_interrupted`` runs at
start-up and turns every RUNNING operation left by a dead process into RECONCILED, with what
really happened, and releases its lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from core.domain.backups import (
    BackupDamaged,
    BackupKind,
    Consistency,
    Manifest,
    PointRef,
    RestorePointNotFound,
)
from core.domain.names import lookalike
from core.domain.operation import Operation, OperationKind, OperationStatus, Recovery, Stage
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    HypervisorSnapshot,
    Origin,
    Snapshot,
    SnapshotKind,
    backup_libvirt_name,
    is_generated_name,
    label_for_external,
    split_libvirt_description,
    validate_label,
)
from core.domain.vm import StateCause, Vm, VmState
from core.errors import CoreError, HypervisorUnavailable, InvalidInput, InvalidLabel, VmNotFound
from core.ports import (
    BackupStore,
    Catalogue,
    Clock,
    DiskAccess,
    HostHypervisor,
    Hypervisor,
    RunningOperation,
)

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=60)
# A revert keeps running inside libvirtd after its client died; give it time to land.
REVERT_SETTLE_SECONDS = 30.0
# How long a change whose connection was lost waits for libvirt to answer again (a daemon
# restart takes seconds) before its outcome is reported unknown.
LOST_CONTACT_WAIT = 60.0


@dataclass
class SyncReport:
    """What ``sync_vm`` changed, and the VM's records as they are after it (``rows``, as
    ``Catalogue.snapshots`` gives them: the caller, holding the VM, need not read them again)."""

    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    rows: list[Snapshot] = field(default_factory=list)


async def sync_vm(
    hypervisor: Hypervisor,
    catalogue: Catalogue,
    vm: Vm,
    listing: list[HypervisorSnapshot] | None = None,
) -> SyncReport:
    """Bring the catalogue's records of ``vm`` in line with libvirt. Call it only while no
    operation is changing the VM (under its lock, or after checking it is free)."""
    report = SyncReport()
    present = {s.libvirt_name: s for s in listing or await hypervisor.list_snapshots(vm)}
    where = await hypervisor.host_of(vm)
    host = where.uuid
    read = await catalogue.snapshots(vm.uuid)
    # A VM's UUID is its identity: listed here, its records are this host's. Claimed only
    # when a record says otherwise: most syncs would write nothing.
    claimed = any(s.host_uuid != host for s in read)
    if claimed:
        await catalogue.claim_host(vm.uuid, host, where.uri)
    rows = {s.libvirt_name: s for s in read}
    # The records as this sync leaves them, kept as it writes them: no read after its writes.
    after = {
        n: s if s.host_uuid == host else replace(s, host_uuid=host, hypervisor_uri=where.uri)
        for n, s in rows.items()
    }
    taken = {s.label for s in rows.values()}
    # Memory sizes are measured (qemu-img) before new records are added, so that each goes in
    # with its size instead of being written twice.
    need_sizes = any(
        hs.has_memory
        if name not in rows
        else rows[name].has_memory and rows[name].memory_bytes is None
        for name, hs in present.items()
    )
    sizes = await hypervisor.memory_state_sizes(vm) if need_sizes else {}
    for name, hs in present.items():
        row = rows.get(name)
        if row is None:
            label = _label_for(hs, taken)
            taken.add(label)
            added = replace(
                record_of(
                    vm,
                    hs,
                    label=label,
                    created_by="snapbot (recovered)" if is_generated_name(name) else "libvirt",
                    origin=Origin.MANUAL if is_generated_name(name) else Origin.EXTERNAL,
                    host_uuid=host,
                    hypervisor_uri=where.uri,
                ),
                memory_bytes=sizes.get(name),
            )
            await catalogue.add_snapshot(added)
            after[name] = added
            report.added.append(label)
        elif row.status is CatalogueStatus.MISSING:
            await catalogue.set_snapshot_status(vm.uuid, name, CatalogueStatus.PRESENT)
            after[name] = replace(after[name], status=CatalogueStatus.PRESENT)
            report.returned.append(row.label)
    for name, row in rows.items():
        if row.kind.in_backup_store:
            continue  # a restore point in the backup store: libvirt never had it
        if name not in present and row.status is CatalogueStatus.PRESENT:
            await catalogue.set_snapshot_status(vm.uuid, name, CatalogueStatus.MISSING)
            after[name] = replace(after[name], status=CatalogueStatus.MISSING)
            report.missing.append(row.label)
    # In the catalogue's order: by time, then as recorded (added ones were recorded last).
    report.rows = sorted(after.values(), key=lambda s: s.created_at)
    if sizes:
        report.rows = await record_memory_sizes(catalogue, vm, report.rows, sizes)
    if report.added or report.missing or report.returned:
        logger.info(
            "catalogue sync for %s: added %s, missing %s, back %s",
            vm.name,
            report.added,
            report.missing,
            report.returned,
        )
    return report


def record_of(
    vm: Vm,
    hs: HypervisorSnapshot,
    *,
    label: str,
    created_by: str,
    origin: Origin,
    host_uuid: str,
    hypervisor_uri: str,
) -> Snapshot:
    """The catalogue record of a snapshot libvirt has and the catalogue does not (yet)."""
    return Snapshot(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        libvirt_name=hs.libvirt_name,
        label=label,
        description=split_libvirt_description(hs.description)[1],
        kind=SnapshotKind.FULL,
        captured_state=hs.captured_state,
        has_memory=hs.has_memory,
        created_at=hs.created_at,
        created_by=created_by,
        origin=origin,
        status=CatalogueStatus.PRESENT,
        memory_bytes=None,
        host_uuid=host_uuid,
        hypervisor_uri=hypervisor_uri,
    )


async def sync_if_free(
    hypervisor: Hypervisor,
    catalogue: Catalogue,
    vm: Vm,
    owner: str,
    store: BackupStore | None = None,
) -> SyncReport | None:
    """Sync ``vm`` unless an operation holds it; None when it does.

    An operation owns its VM's rows until it ends: a listing that synced in the middle of a
    create would insert the new snapshot first (as manual, under a made-up label) and make the
    create fail although the snapshot exists. The sync therefore takes the VM's lock itself.
    """
    token = await catalogue.lock_for_sync(vm.uuid, owner)
    if token is None:
        return None
    try:
        if store is not None:
            await sync_points(store, catalogue, vm.uuid, vm.name)
        return await sync_vm(hypervisor, catalogue, vm)
    finally:
        await catalogue.unlock_sync(token)


async def sync_points(store: BackupStore, catalogue: Catalogue, vm_uuid: str, vm_name: str) -> None:
    """Bring the catalogue's backup-store records of one VM in line with the store: adopt
    points it lacks (a new catalogue over an old store: the manifest carries the label, the
    creator and the consistency), mark records whose point is gone, and back. Call it only
    while no operation changes the VM, as ``sync_vm``."""
    # Listing ids is cheap; manifests are read only for points the catalogue lacks (a listing
    # runs this for every VM, and a VM may have hundreds of points).
    points = await store.point_ids(vm_uuid)
    every = await catalogue.snapshots(vm_uuid)
    rows = [r for r in every if r.kind.in_backup_store]
    known = {r.point_id for r in rows}
    taken = {r.label for r in every}
    for point_id in sorted(points - {p for p in known if p is not None}):
        try:
            manifest = await store.manifest(PointRef(vm_uuid, point_id))
        except (RestorePointNotFound, BackupDamaged, InvalidInput) as error:
            # Deleted meanwhile, or damaged (verify names it): nothing to adopt now.
            logger.warning("not adopting restore point %s of %s: %s", point_id, vm_name, error)
            continue
        record = record_of_point(manifest, vm_name)
        label = record.label
        if lookalike(label, taken) is not None:
            label = f"{label}-{point_id[-8:]}"
        taken.add(label)
        await catalogue.add_snapshot(replace(record, label=label))
        logger.info(
            "catalogue sync for %s: adopted restore point %s as %s", vm_name, point_id, label
        )
    for row in rows:
        stored = row.point_id in points
        if not stored and row.status is CatalogueStatus.PRESENT:
            await catalogue.set_snapshot_status(vm_uuid, row.libvirt_name, CatalogueStatus.MISSING)
        elif stored and row.status is CatalogueStatus.MISSING:
            await catalogue.set_snapshot_status(vm_uuid, row.libvirt_name, CatalogueStatus.PRESENT)


def record_of_point(manifest: Manifest, vm_name: str) -> Snapshot:
    """The catalogue record of a restore point the store holds."""
    consistency = manifest.consistency
    ran = consistency in (Consistency.FROZEN, Consistency.CRASH_CONSISTENT)
    return Snapshot(
        vm_uuid=manifest.ref.vm_uuid,
        vm_name=vm_name,
        libvirt_name=backup_libvirt_name(manifest.ref.point_id),
        label=manifest.label or manifest.ref.point_id.lower(),
        description=manifest.description,
        kind=SnapshotKind.INCREMENTAL
        if manifest.kind is BackupKind.INCREMENTAL
        else SnapshotKind.ARCHIVED,
        captured_state=CapturedState.RUNNING if ran else CapturedState.SHUT_OFF,
        has_memory=False,
        created_at=manifest.created_at,
        created_by=manifest.created_by or "snapbot (from the backup store)",
        origin=Origin.MANUAL,
        status=CatalogueStatus.PRESENT,
        memory_bytes=None,
        point_id=manifest.ref.point_id,
        logical_bytes=manifest.logical_size,
        added_bytes=manifest.figures.bytes_new,
        consistency=None if consistency is None else consistency.value,
    )


async def record_memory_sizes(
    catalogue: Catalogue, vm: Vm, rows: list[Snapshot], sizes: Mapping[str, int]
) -> list[Snapshot]:
    """Record the saved-memory sizes ``sizes`` (``Hypervisor.memory_state_sizes``) of the VM's
    snapshots: only the records (``rows``, as stored) whose size they change are written;
    return ``rows`` with the sizes."""
    result = []
    for row in rows:
        size = sizes.get(row.libvirt_name)
        if size is not None and row.memory_bytes != size:
            await catalogue.set_memory_bytes(vm.uuid, row.libvirt_name, size)
            row = replace(row, memory_bytes=size)
        result.append(row)
    return result


def _label_for(hs: HypervisorSnapshot, taken: set[str]) -> str:
    recorded, _ = split_libvirt_description(hs.description)
    if recorded is not None and lookalike(recorded, taken) is None:
        try:
            return validate_label(recorded)
        except InvalidLabel:
            pass
    return label_for_external(hs.libvirt_name, taken)


def _owner_is_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine: only its heartbeat can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reconciler:
    """Start-up and on-demand reconciliation."""

    def __init__(
        self,
        hypervisor: HostHypervisor,
        catalogue: Catalogue,
        clock: Clock,
        owner: str,
        on_end: Callable[[Operation], None] | None = None,
        store: BackupStore | None = None,
        disks: DiskAccess | None = None,
        owns: Callable[[Operation], Awaitable[bool]] | None = None,
    ) -> None:
        self._hv = hypervisor
        # Where snapbot serves several hosts, each host's reconciler finishes only the
        # operations that ran on its host (None: every operation is this hypervisor's).
        self._owns = owns
        self._catalogue = catalogue
        # The backup store and disk access, when configured: the evidence for interrupted
        # backups, restores from the store and archives.
        self._store = store
        self._disks = disks
        self._clock = clock
        self._owner = owner
        # told of each operation this reconciler ends (its log line and metrics)
        self._on_end = on_end

    def _abandoned(self, running: RunningOperation, db_now: datetime) -> bool:
        if running.owner == self._owner:
            return False
        if not running.owner or not _owner_is_alive(running.owner):
            return True
        # Heartbeats are written and judged by the database's clock, never a host's.
        return db_now - running.heartbeat_at > STALE_AFTER

    async def recover_interrupted(self) -> list[Operation]:
        """Finish every operation whose process died (at start-up, and every
        ``TAKEOVER_INTERVAL`` while running: another replica or a killed process may have left
        a lock); return them as now recorded."""
        finished = []
        db_now = await self._catalogue.database_now()
        for running in await self._catalogue.running_operations():
            if not self._abandoned(running, db_now):
                continue
            if self._owns is not None and not await self._owns(running.operation):
                continue
            if not await self._catalogue.take_over(
                running.operation.id, running.owner, self._owner
            ):
                continue
            op = running.operation
            try:
                outcome = await self._reconcile(op)
            except CoreError as exc:
                outcome = f"interrupted; could not check libvirt ({exc}); VM state unknown"
            ended = await self._catalogue.finish_operation(
                op.id, OperationStatus.RECONCILED, outcome=outcome
            )
            finished.append(ended)
            if self._on_end is not None:
                self._on_end(ended)
            logger.warning(
                "reconciled interrupted %s on %s: %s", op.kind.value, op.vm_name, outcome
            )
        return finished

    async def sync_all(self) -> dict[str, SyncReport]:
        """Sync every VM that no operation holds; mark snapshots of vanished VMs missing."""
        reports = {}
        vms = await self._hv.list_vms()
        for vm in vms:
            try:
                report = await sync_if_free(self._hv, self._catalogue, vm, self._owner, self._store)
            except VmNotFound:
                # undefined between the listing and its sync: the next sync marks its records
                logger.info("VM %s vanished while the catalogue was synced", vm.name)
                continue
            if report is not None:
                reports[vm.name] = report
        known = {vm.uuid for vm in vms}
        host = await self._hv.host_uuid()
        for row in await self._catalogue.snapshots():
            # Only this host's records can be judged by its listing: a VM of another host (or
            # of unknown host) is not "gone" because this hypervisor does not have it.
            # A restore point in the backup store outlives its VM: that is what it is for.
            if (
                row.vm_uuid not in known
                and row.status is CatalogueStatus.PRESENT
                and row.host_uuid == host
                and not row.kind.in_backup_store
            ):
                await self._catalogue.set_snapshot_status(
                    row.vm_uuid, row.libvirt_name, CatalogueStatus.MISSING
                )
        return reports

    async def reconcile_one(self, op: Operation) -> str:
        """The outcome of ``op`` as the evidence in libvirt shows it (for an admin's unlock);
        the caller records it."""
        return await self._reconcile(op)

    async def _reconcile(self, op: Operation) -> str:
        """Decide what an interrupted operation did from its recorded stage and from evidence
        in libvirt, never from the VM's run state alone: someone may have paused or stopped
        the VM on purpose. Where the evidence does not settle it, say "unknown" and what to
        check, and change nothing."""
        try:
            vm = await self._hv.get_vm_by_uuid(op.vm_uuid)
        except VmNotFound:
            # A VM's UUID is its identity; a missing one is only "gone" if it lived here.
            recorded_host = op.details.get("host_uuid")
            host = await self._hv.host_uuid()
            if recorded_host and recorded_host != host:
                return (
                    f"unknown: it ran on another hypervisor (host {recorded_host}) than the one "
                    f"snapbot is connected to now ({host}); check the VM there"
                )
            if op.kind is OperationKind.RESTORE and op.details.get("point_id"):
                return (
                    "interrupted before the VM was defined from the backup store; nothing was "
                    "defined, and disk images it had begun to write may be left beside the "
                    f"original paths: run the restore again (it refuses while a file is in the "
                    f"way, naming it){_paths_note(op)}"
                )
            return "interrupted; the VM no longer exists in libvirt"
        stage = op.stage.value if op.stage else "start"
        if op.kind is OperationKind.SNAPSHOT:
            return await self._reconcile_snapshot(vm, op, stage)
        if op.kind is OperationKind.BACKUP:
            return await self._reconcile_backup(vm, op, stage)
        if op.kind is OperationKind.ARCHIVE:
            return await self._reconcile_archive(vm, op, stage)
        if op.kind is OperationKind.RESTORE and op.details.get("point_id"):
            return await self._reconcile_store_restore(vm, op, stage)
        if op.kind is OperationKind.RESTORE:
            return await self._reconcile_restore(vm, op, stage)
        if op.kind is OperationKind.DELETE:
            name = op.libvirt_name
            if not name:
                # the snapshot is recorded once chosen, before libvirt is asked to delete it
                await sync_vm(self._hv, self._catalogue, vm)
                return (
                    f"interrupted during {stage}, before a snapshot was chosen; no snapshot "
                    "was touched"
                )
            # libvirtd goes on deleting after its client died: look once it is done.
            settled = await self._job_settled(vm)
            listing = await self._hv.list_snapshots(vm)
            still = any(s.libvirt_name == name for s in listing)
            if not still and name:
                await self._catalogue.remove_snapshot(vm.uuid, name)
            else:
                await sync_vm(self._hv, self._catalogue, vm, listing)
            if still and not settled:
                return (
                    "interrupted; unknown whether the snapshot will be deleted: libvirt was "
                    f"still working on the VM after {REVERT_SETTLE_SECONDS:.0f} s; the next "
                    "listing shows it"
                )
            return "interrupted; the snapshot " + ("still exists" if still else "was deleted")
        return f"interrupted during {stage}; nothing in libvirt was being changed"

    async def _reconcile_backup(self, vm: Vm, op: Operation, stage: str) -> str:
        """An interrupted backup: end the backup job it left on the VM (libvirt keeps a pull
        job after its client died, with a scratch file growing), and see in the store whether
        the restore point was completed (its manifest is written last)."""
        notes = [await self._end_backup_job(vm)]
        done = await self._stored_point(vm, op)
        if done is not None and self._store is not None:
            await sync_points(self._store, self._catalogue, vm.uuid, vm.name)
            notes.append(f"the restore point {done} was completed and is listed")
        else:
            notes.append("no restore point was completed; nothing of it is listed")
        return _joined(f"interrupted during {stage}", *notes)

    async def _reconcile_archive(self, vm: Vm, op: Operation, stage: str) -> str:
        """An interrupted archive: the copy in the store and the internal snapshot may both
        exist. Keep exactly one: the internal snapshot when it is still there (the copy is
        removed), the copy when libvirt had deleted the snapshot."""
        name = op.libvirt_name or ""
        notes = [await self._end_backup_job(vm)]
        await self._job_settled(vm)
        listing = await self._hv.list_snapshots(vm)
        internal = any(s.libvirt_name == name for s in listing)
        point = await self._stored_point(vm, op)
        if point is None:
            await sync_vm(self._hv, self._catalogue, vm, listing)
            state = "unchanged" if internal else "gone from libvirt"
            return _joined(
                f"interrupted during {stage}; no copy was completed in the backup store",
                f"the internal snapshot is {state}",
                *[n for n in notes if n],
            )
        assert self._store is not None
        manifest = await self._store.manifest(PointRef(vm.uuid, point))
        if internal:
            await self._store.delete_point(manifest.ref)
            await sync_vm(self._hv, self._catalogue, vm, listing)
            return _joined(
                f"interrupted during {stage}; the internal snapshot is unchanged and its "
                f"unfinished copy {point} was removed from the backup store",
                *[n for n in notes if n],
            )
        await self._catalogue.archive_snapshot(
            vm.uuid,
            name,
            point_id=point,
            logical_bytes=manifest.logical_size,
            added_bytes=manifest.figures.bytes_new,
        )
        return _joined(
            f"interrupted during {stage}; libvirt had deleted the internal snapshot and its copy "
            f"{point} is in the backup store: it is archived",
            *[n for n in notes if n],
        )

    async def _reconcile_store_restore(self, vm: Vm, op: Operation, stage: str) -> str:
        """An interrupted restore from the backup store. Before the disks were written, they
        are untouched (undo only what snapbot did, as for an internal revert). Once writing
        began they may be part old, part restored: the VM is left shut off, never started
        on such disks, and the way back is named."""
        details = op.details
        if op.details.get("as_name"):
            return (
                f"interrupted during {stage} of a copy named {details['as_name']}; the original "
                f"VM was not changed{_paths_note(op)}"
            )
        if not details.get("writing_disks"):
            return await self._reconcile_restore(vm, op, stage)
        state = await self._hv.state(vm)
        if state.is_active:
            return _joined(
                f"interrupted during {stage}; the VM is {state.value}, so someone started it "
                "after snapbot stopped: check its data, its disks may be partly restored",
            )
        safety = details.get("safety")
        back = (
            f"revert to the safety snapshot {safety} for the state before the restore"
            if isinstance(safety, str) and safety
            else "no safety snapshot was taken"
        )
        return _joined(
            f"interrupted during {stage}; its disks may be partly restored, so the VM was left "
            "shut off",
            f"run the restore again to finish it, or {back}",
        )

    async def _end_backup_job(self, vm: Vm) -> str:
        if self._disks is None:
            return ""
        ended = await self._disks.end_leftover_job(vm)
        if ended is None:
            return "whether a backup job was left on the VM is unknown (check virsh domjobinfo)"
        return "the backup job it had left on the VM was ended" if ended else ""

    async def _stored_point(self, vm: Vm, op: Operation) -> str | None:
        """The restore point the operation wrote, when the store has it finished: by the id it
        recorded, or (it died before recording it) by label and time."""
        if self._store is None:
            return None
        recorded = op.details.get("point_id")
        for manifest in await self._store.list_points(vm.uuid):
            if manifest.ref.point_id == recorded or (
                recorded is None
                and manifest.label == op.snapshot_label
                and manifest.created_at >= op.started_at
            ):
                return manifest.ref.point_id
        return None

    async def _reconcile_snapshot(self, vm: Vm, op: Operation, stage: str) -> str:
        name = op.libvirt_name
        if not name:
            # The snapshot's name is recorded right before libvirt is asked to make it: no
            # name, no call. Whatever state the VM is in now is not snapbot's doing.
            state = await self._hv.state(vm)
            return (
                f"interrupted during {stage}, before the snapshot was started; nothing was "
                f"changed; the VM is {state.value}"
            )
        # libvirtd goes on saving after its client died: judge the result once the job ends.
        if not await self._job_settled(vm):
            state = await self._hv.state(vm)
            return (
                f"interrupted during {stage}; unknown whether the snapshot will be made: libvirt "
                f"is still running a job on the VM after {REVERT_SETTLE_SECONDS:.0f} s (see "
                f"`virsh domjobinfo {vm.name}`); the VM is {state.value}; the next listing "
                "records the snapshot if it completes"
            )
        listing = await self._hv.list_snapshots(vm)
        made = await self._adopt(vm, op, name, listing, op.snapshot_label)
        state, resumed = await self._resume_after_save(vm, str(op.details.get("pre_state", "")))
        result = "the snapshot was completed and is kept" if made else "no snapshot was made"
        if not made and await self._hv.discard_orphan(vm, name):
            result += " (the half-made one QEMU left in the image was removed)"
        return f"interrupted during {stage}; {result}; the VM {resumed}is {state.value}"

    async def _job_settled(self, vm: Vm) -> bool:
        waited = 0.0
        while await self._hv.job_active(vm):
            if waited >= REVERT_SETTLE_SECONDS:
                return False
            await asyncio.sleep(0.5)
            waited += 0.5
        return True

    async def _adopt(
        self,
        vm: Vm,
        op: Operation,
        name: str,
        listing: list[HypervisorSnapshot],
        label: str | None,
        origin: Origin | None = None,
    ) -> bool:
        """Record a snapshot an interrupted operation made, under the label, origin and author
        it was made with (a sync alone would file a scheduled snapshot as manual, and a
        manual one would then never be pruned). Return whether libvirt has it."""
        hs = next((s for s in listing if s.libvirt_name == name), None)
        if hs is None:
            await sync_vm(self._hv, self._catalogue, vm, listing)
            return False
        if not any(r.libvirt_name == name for r in await self._catalogue.snapshots(vm.uuid)):
            taken = {r.label for r in await self._catalogue.snapshots(vm.uuid)}
            wanted = label if label and label not in taken else _label_for(hs, taken)
            recorded_origin = str(op.details.get("origin", ""))
            where = await self._hv.host_of(vm)
            await self._catalogue.add_snapshot(
                record_of(
                    vm,
                    hs,
                    label=wanted,
                    created_by=op.requested_by,
                    origin=origin
                    or (Origin(recorded_origin) if recorded_origin else Origin.MANUAL),
                    host_uuid=where.uuid,
                    hypervisor_uri=where.uri,
                )
            )
        elif label:
            await self._restore_label(vm, name, label)
        await sync_vm(self._hv, self._catalogue, vm, listing)
        return True

    async def _resume_after_save(self, vm: Vm, pre_state: str) -> tuple[VmState, str]:
        """A guest is paused while its memory is saved; a save cut off can leave it paused.
        Resume it only when snapbot saw it running right before it started the save."""
        state = await self._hv.state(vm)
        if state is VmState.PAUSED and pre_state == VmState.RUNNING.value:
            cause = await self._hv.state_cause(vm)
            if cause is StateCause.BY_USER:
                return state, "was left paused: libvirt says someone paused it; "
            await self._hv.resume(vm)
            note = f"was {Recovery.RESUMED.value} (a memory save had paused it) and "
            return await self._hv.state(vm), note
        return state, ""

    async def _restore_label(self, vm: Vm, libvirt_name: str, label: str) -> None:
        rows = await self._catalogue.snapshots(vm.uuid)
        if any(r.label == label for r in rows):
            return
        await self._catalogue.relabel_snapshot(vm.uuid, libvirt_name, label)

    async def _reconcile_restore(self, vm: Vm, op: Operation, stage: str) -> str:
        details = op.details
        pre_state = str(details.get("pre_state", ""))
        safety = details.get("safety")
        notes: list[str] = []
        if isinstance(safety, str) and safety:
            await self._job_settled(vm)  # a safety snapshot's memory save may still be going
            listing = await self._hv.list_snapshots(vm)
            kept = await self._adopt(vm, op, safety, listing, None, Origin.SAFETY)
            notes.append(
                f"the safety snapshot {safety} "
                + ("was completed and is kept" if kept else "was not made")
            )
        if not details.get("revert_issued"):
            return await self._before_revert(vm, op, stage, pre_state, notes)
        target = op.libvirt_name or ""
        await self._job_settled(vm)  # QEMU may still be loading the snapshot's memory
        landed = await self._revert_landed(vm, op, target)
        state = await self._hv.state(vm)
        if landed is None:
            await sync_vm(self._hv, self._catalogue, vm)
            return _joined(
                f"interrupted during {stage}; unknown whether the revert to {target} completed",
                *notes,
                f"the VM is {state.value} and was left as it is: check `virsh snapshot-current "
                f"{vm.name}` and the guest's data before using it, or run the restore again",
            )
        if not landed:
            await sync_vm(self._hv, self._catalogue, vm)
            return _joined(
                f"interrupted during {stage}; the revert to {target} did not complete "
                "(libvirt's current snapshot is still another one)",
                *notes,
                f"the VM is {state.value}: run the restore again, or start the VM",
            )
        await sync_vm(self._hv, self._catalogue, vm)
        if state is VmState.PAUSED and details.get("target_has_memory"):
            # snapbot reverts memory snapshots paused and resumes them itself
            await self._hv.resume(vm)
            state = await self._hv.state(vm)
            return _joined(
                f"interrupted during {stage}; the revert to {target} had completed "
                "(libvirt marks it the current snapshot)",
                *notes,
                f"the VM was {Recovery.RESUMED.value} and is {state.value}",
            )
        return _joined(
            f"interrupted during {stage}; the revert to {target} had completed",
            *notes,
            f"the VM is {state.value}",
        )

    async def _before_revert(
        self, vm: Vm, op: Operation, stage: str, pre_state: str, notes: list[str]
    ) -> str:
        """The revert was never issued, so the disk is untouched; undo only what snapbot
        itself did before it (a memory save in flight, the stop)."""
        state = await self._hv.state(vm)
        if op.stage is Stage.SAFETY_SNAPSHOT:
            state, resumed = await self._resume_after_save(vm, pre_state)
            notes.append(f"the VM {resumed}is {state.value}")
        elif (
            op.stage in (Stage.STOPPING, Stage.REPLACING_DISK_AND_MEMORY, Stage.REPLACING_DISK)
            and state is VmState.SHUT_OFF
            and pre_state == VmState.RUNNING.value
        ):
            # snapbot stopped it for the restore, and the revert was never sent: the disk is
            # as it was, so the VM comes back as it was (less the memory the stop dropped).
            await self._hv.start(vm)
            state = await self._hv.state(vm)
            notes.append(f"the VM was {Recovery.STARTED.value} and is {state.value}")
        else:
            notes.append(f"the VM is {state.value}, as snapbot found it")
        await sync_vm(self._hv, self._catalogue, vm)
        return _joined(f"interrupted during {stage}, before the disk was replaced", *notes)

    async def _revert_landed(self, vm: Vm, op: Operation, target: str) -> bool | None:
        if op.stage is Stage.STARTING:
            return True  # recorded only after libvirt reported the revert done
        return await revert_landed(
            self._hv,
            vm,
            target,
            current_before=_text(op.details.get("current_before")),
            pre_state=str(op.details.get("pre_state", "")),
            target_has_memory=bool(op.details.get("target_has_memory")),
        )


async def revert_landed(
    hypervisor: Hypervisor,
    vm: Vm,
    target: str,
    *,
    current_before: str | None,
    pre_state: str,
    target_has_memory: bool,
) -> bool | None:
    """Whether a revert to ``target`` whose answer was lost (a crash, a lost connection)
    completed, from libvirt's evidence: it makes the target the current snapshot when a revert
    succeeds, and records that a state came from a snapshot. libvirtd finishes a revert whose
    client died, so it gets ``REVERT_SETTLE_SECONDS``. None: the evidence cannot tell (the
    target was current before, and libvirt gives no reason)."""
    waited = 0.0
    while True:
        listing = await hypervisor.list_snapshots(vm)
        current = next((s.libvirt_name for s in listing if s.is_current), None)
        if current == target and current_before != target:
            return True
        if await _state_from_this_revert(hypervisor, vm, pre_state, target_has_memory):
            return True
        if waited >= REVERT_SETTLE_SECONDS:
            return None if current_before == target or current is None else False
        await asyncio.sleep(1.0)
        waited += 1.0


async def _state_from_this_revert(
    hypervisor: Hypervisor, vm: Vm, pre_state: str, target_has_memory: bool
) -> bool:
    """snapbot stops an active VM before it reverts, so for a VM that was running "this state
    came from a snapshot" can only be this revert's doing; a memory revert leaves the VM paused
    or running, a disk-only one shut off."""
    if pre_state not in (VmState.RUNNING.value, VmState.PAUSED.value):
        return False  # shut off before: an older revert may have left the same reason
    if await hypervisor.state_cause(vm) is not StateCause.FROM_SNAPSHOT:
        return False
    return (await hypervisor.state(vm)).is_active == target_has_memory


def _paths_note(op: Operation) -> str:
    paths = op.details.get("new_disk_paths")
    if isinstance(paths, list) and paths:
        return f"; its new disk images were to be {', '.join(str(p) for p in paths)}"
    return ""


async def answer_after_loss(hypervisor: Hypervisor, vm: Vm) -> list[HypervisorSnapshot]:
    """After a lost connection mid-change: wait (up to ``LOST_CONTACT_WAIT``) until libvirt
    answers again and has finished any job on the VM, and return its snapshots then, so the
    outcome is decided from what libvirt has, not from the silence. ``HypervisorUnavailable``
    when it does not answer in time: the outcome stays unknown."""
    waited = 0.0
    while True:
        try:
            if not await hypervisor.job_active(vm) or waited >= LOST_CONTACT_WAIT:
                return await hypervisor.list_snapshots(vm)
        except HypervisorUnavailable:
            if waited >= LOST_CONTACT_WAIT:
                raise
        await asyncio.sleep(1.0)
        waited += 1.0


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
