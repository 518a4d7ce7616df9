"""Restore points in the backup store: take one, restore from one (in place, as a new VM, or
a VM that no longer exists), move an internal snapshot there, verify what is stored.

An incremental snapshot is a restore point in the store (``core.domain.backups``): the VM's
disks and configuration, outside its images, each point complete on its own. The catalogue
keeps a record of each (kind INCREMENTAL or ARCHIVED, key ``pt-<point id>`` or the archived
snapshot's own name); the store keeps everything a restore needs, so a catalogue that lost
them (a new snapbot pointed at an old store) adopts them again (``sync_points``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from core.domain.backups import (
    BackupKind,
    BackupSource,
    Consistency,
    DiskExport,
    GcReport,
    Manifest,
    PointRef,
    RestorePointNotFound,
    TransferFigures,
    VerifyReport,
)
from core.domain.names import closest
from core.domain.operation import (
    Actor,
    OperationKind,
    ProgressCallback,
    Stage,
    no_progress,
)
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    Origin,
    Snapshot,
    SnapshotKind,
    validate_description,
    validate_label,
)
from core.domain.vm import Vm, VmState
from core.errors import (
    CoreError,
    HypervisorError,
    HypervisorUnavailable,
    InvalidInput,
    OperationFailed,
    SnapshotMissing,
    VmNotFound,
)
from core.ports import BackupStore, Catalogue, Clock, DiskAccess, Hypervisor
from core.services.operations import OperationRunner
from core.services.reconcile import answer_after_loss, record_of_point, sync_points, sync_vm
from core.services.snapshots import SnapshotService

logger = logging.getLogger(__name__)

# libvirt's own rule for domain names is looser; these are names every shell, path and Slack
# message carries without quoting.
_VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RAN = (Consistency.FROZEN, Consistency.CRASH_CONSISTENT)


@dataclass(frozen=True, slots=True)
class BackupResult:
    """An incremental snapshot that was taken: what it cost and how consistent it is."""

    snapshot: Snapshot
    figures: TransferFigures
    consistency: Consistency
    note: str
    seconds: float
    vm_state: VmState


@dataclass(frozen=True, slots=True)
class BackupRestoreResult:
    """A restore from the backup store. ``created``: a VM was defined (a copy under a new
    name, or a deleted VM brought back)."""

    snapshot: Snapshot
    safety: Snapshot | None
    vm_name: str
    created: bool
    bytes_written: int
    seconds: float
    vm_state: VmState


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """A full snapshot whose disk state moved to the store; ``freed_bytes`` is what its image
    gave back (None: not measurable)."""

    snapshot: Snapshot
    figures: TransferFigures
    freed_bytes: int | None
    seconds: float


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A verification: what was re-read, which records are now marked damaged, and which
    were marked damaged before and are whole again (a later backup stored the piece again)."""

    report: VerifyReport
    damaged: tuple[Snapshot, ...]
    repaired: tuple[Snapshot, ...]
    seconds: float


def check_vm_name(name: str) -> str:
    if not _VM_NAME.match(name):
        raise InvalidInput(
            f"{name!r} cannot be a VM name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def consistency_of(snapshot: Snapshot) -> Consistency | None:
    try:
        return None if snapshot.consistency is None else Consistency(snapshot.consistency)
    except ValueError:
        return None


class BackupService:
    """The backup store's use cases over the hypervisor, the VMs' disks, the store and the
    catalogue. Operations hold the VM's lock like every other (``SnapshotService.holding``)."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        disks: DiskAccess,
        store: BackupStore,
        catalogue: Catalogue,
        runner: OperationRunner,
        clock: Clock,
        snapshots: SnapshotService,
        *,
        after_change: Callable[[], None] | None = None,
    ) -> None:
        self._hv = hypervisor
        self._disks = disks
        self._store = store
        self._catalogue = catalogue
        self._runner = runner
        self._clock = clock
        self._snapshots = snapshots
        # Told (without waiting) whenever a point is written or deleted: the offsite copy
        # follows the store in the background, so no reply waits for it.
        self._after_change = after_change

    def _changed(self) -> None:
        if self._after_change is not None:
            self._after_change()

    # -- taking ------------------------------------------------------------------------------

    async def create_backup(
        self,
        vm_name: str,
        label: str,
        *,
        actor: Actor,
        description: str = "",
        origin: Origin = Origin.MANUAL,
        progress: ProgressCallback = no_progress,
    ) -> BackupResult:
        """Store the VM's disks and configuration as a restore point, running or shut off;
        only data the store does not hold yet takes space."""
        kind = OperationKind.BACKUP
        async with self._runner.refusals_audited(kind, actor, vm_name):
            label = validate_label(label)
            description = validate_description(description)
        started = time.monotonic()
        async with self._snapshots.holding(kind, vm_name, actor, progress, label) as (vm, op):
            await self._refuse_taken_label(vm, label)
            await op.record(origin=origin.value, pre_state=vm.state.value)
            await op.stage(Stage.READING_DISKS)
            try:
                async with self._disks.backup_view(vm) as export:
                    manifest = await self._store.write_point(
                        self._source(vm, export, BackupKind.INCREMENTAL, label, description, actor)
                    )
            except HypervisorError as exc:
                now = await self._snapshots.state_or_unknown(vm)
                raise OperationFailed(exc.detail, vm=vm.name, vm_state=now) from exc
            await op.record(point_id=manifest.ref.point_id)
            snapshot = self._record(vm, manifest, origin=origin, captured=_captured(export))
            await self._catalogue.add_snapshot(snapshot)
            state = await self._hv.state(vm)
            figures = manifest.figures
            op.outcome = (
                f"stored {snapshot.label} ({manifest.ref.point_id}): read {figures.bytes_read} "
                f"bytes, {figures.bytes_new} new; {export.consistency.value}"
            )
        self._changed()
        return BackupResult(
            snapshot,
            figures,
            export.consistency,
            export.note,
            time.monotonic() - started,
            state,
        )

    async def archive(
        self,
        vm_name: str,
        label: str,
        *,
        actor: Actor,
        progress: ProgressCallback = no_progress,
        libvirt_name: str | None = None,
    ) -> ArchiveResult:
        """Move a full snapshot's disk state into the store and delete the internal snapshot,
        giving its space in the image back. Its memory state is not kept."""
        kind = OperationKind.ARCHIVE
        started = time.monotonic()
        async with self._snapshots.holding(kind, vm_name, actor, progress, label) as (vm, op):
            await sync_vm(self._hv, self._catalogue, vm)
            target = await self._snapshots.lookup(
                vm, await self._catalogue.snapshots(vm.uuid), label, libvirt_name
            )
            if target.kind is not SnapshotKind.FULL:
                raise InvalidInput(
                    f"{target.label} of {vm.name} is already in the backup store "
                    f"({target.kind.value}); only full snapshots can be archived"
                )
            if target.status is CatalogueStatus.MISSING:
                raise SnapshotMissing(vm.name, target.label)
            await op.record(libvirt_name=target.libvirt_name)
            await op.stage(Stage.READING_DISKS)
            try:
                async with self._disks.snapshot_view(vm, target.libvirt_name) as export:
                    manifest = await self._store.write_point(
                        self._source(
                            vm,
                            export,
                            BackupKind.ARCHIVED,
                            target.label,
                            target.description,
                            actor,
                            created_by=target.created_by,
                        )
                    )
            except HypervisorError as exc:
                now = await self._snapshots.state_or_unknown(vm)
                raise OperationFailed(exc.detail, vm=vm.name, vm_state=now) from exc
            await op.record(point_id=manifest.ref.point_id)
            before = await self._hv.disk_allocation(vm)
            await op.stage(Stage.DELETING)
            try:
                await self._hv.delete_snapshot(vm, target.libvirt_name)
            except HypervisorError as exc:
                if isinstance(exc, HypervisorUnavailable):
                    listing = await answer_after_loss(self._hv, vm)
                    gone = all(s.libvirt_name != target.libvirt_name for s in listing)
                else:
                    gone = False
                if not gone:
                    # The internal snapshot stays, so the stored copy would be a second record
                    # of the same snapshot: remove it rather than leave a duplicate.
                    await self._store.delete_point(manifest.ref)
                    now = await self._snapshots.state_or_unknown(vm)
                    raise OperationFailed(
                        f"{exc.detail}; the internal snapshot {target.label} is unchanged and "
                        "the copy in the backup store was removed",
                        vm=vm.name,
                        vm_state=now,
                    ) from exc
            await self._catalogue.archive_snapshot(
                vm.uuid,
                target.libvirt_name,
                point_id=manifest.ref.point_id,
                logical_bytes=manifest.logical_size,
                added_bytes=manifest.figures.bytes_new,
            )
            after = await self._hv.disk_allocation(vm)
            freed = None if before is None or after is None else max(before - after, 0)
            op.outcome = f"archived {target.label} as {manifest.ref.point_id}; freed {freed} bytes"
        self._changed()
        archived = await self._record_by_name(vm.uuid, target.libvirt_name)
        return ArchiveResult(
            archived or target, manifest.figures, freed, time.monotonic() - started
        )

    # -- restoring ---------------------------------------------------------------------------

    async def restore_backup(
        self,
        vm_name: str,
        label: str,
        *,
        actor: Actor,
        safety_snapshot: bool = True,
        progress: ProgressCallback = no_progress,
        libvirt_name: str | None = None,
    ) -> BackupRestoreResult:
        """Write a restore point's disks back into the VM's own images (their internal
        snapshots stay) and start it if it ran when the point was taken. A safety snapshot of
        the current state comes first unless ``safety_snapshot`` is False."""
        kind = OperationKind.RESTORE
        started = time.monotonic()
        async with self._snapshots.holding(kind, vm_name, actor, progress, label) as (vm, op):
            target = await self._stored_target(vm.uuid, vm.name, label, libvirt_name)
            manifest = await self._manifest(vm.name, target)
            pre_state = await self._hv.state(vm)
            await op.record(
                libvirt_name=target.libvirt_name,
                point_id=target.point_id,
                pre_state=pre_state.value,
            )
            safety = None
            if safety_snapshot:
                # records its stage, SAFETY_SNAPSHOT, itself
                safety = await self._snapshots.take_safety_snapshot(op, vm, target.label, actor)
            if pre_state.is_active:
                await op.stage(Stage.STOPPING)
                try:
                    await self._hv.stop(vm)
                except HypervisorError as exc:
                    now = await self._snapshots.state_or_unknown(vm)
                    raise OperationFailed(exc.detail, vm=vm.name, vm_state=now) from exc
            await op.stage(Stage.WRITING_DISKS)
            await op.record(writing_disks=True)
            sizes = {d.target: d.size for d in manifest.disks}
            try:
                async with self._disks.restore_in_place(vm, sizes) as writable:
                    written = 0
                    for disk in manifest.disks:
                        written += await self._store.restore_disk(
                            manifest.ref, disk.target, writable.disks[disk.target]
                        )
            except CoreError as exc:
                raise self._failed_in_place(vm, exc, safety) from exc
            state = VmState.SHUT_OFF
            if _ran(target):
                await op.stage(Stage.STARTING)
                await self._hv.start(vm)
                state = await self._hv.state(vm)
            op.outcome = f"restored {target.label} from the backup store; VM {state.value}"
        return BackupRestoreResult(
            target, safety, vm.name, False, written, time.monotonic() - started, state
        )

    async def restore_as(
        self,
        vm_name: str,
        label: str,
        new_name: str | None,
        *,
        actor: Actor,
        progress: ProgressCallback = no_progress,
        libvirt_name: str | None = None,
    ) -> BackupRestoreResult:
        """Define a VM from a restore point: a copy named ``new_name`` beside the original
        (new UUID, MAC addresses and disk paths, left shut off), or, with ``new_name`` None,
        the VM ``vm_name`` itself when it no longer exists (same name and UUID; started if it
        ran when the point was taken)."""
        kind = OperationKind.RESTORE
        started = time.monotonic()
        async with self._runner.refusals_audited(kind, actor, vm_name) as refusal:
            if new_name is not None:
                check_vm_name(new_name)
            source, existing = await self._source_vm(vm_name)
            refusal.vm_uuid = source.uuid
            if new_name is None and existing:
                raise InvalidInput(
                    f"{vm_name} exists: restore it in place with /restore {vm_name} {label}, "
                    f"or as a copy with --as <new-name>"
                )
            if new_name is not None and await self._vm_exists(new_name):
                raise InvalidInput(f"a VM named {new_name} exists already: choose another name")
        async with self._runner.run(kind, source, actor, progress, label=label) as op:
            await op.stage(Stage.CHECKING)
            target = await self._stored_target(source.uuid, vm_name, label, libvirt_name)
            manifest = await self._manifest(vm_name, target)
            await op.record(
                libvirt_name=target.libvirt_name, point_id=target.point_id, as_name=new_name
            )
            blobs = {
                b.name: await self._store.read_blob(manifest.ref, b.name) for b in manifest.blobs
            }
            await op.stage(Stage.WRITING_DISKS)
            sizes = {d.target: d.size for d in manifest.disks}
            try:
                async with self._disks.restore_as_new(
                    manifest.domain_xml, sizes, new_name=new_name, blobs=blobs
                ) as writable:
                    # Evidence for a recovery: where the new images are, should this die.
                    await op.record(new_disk_paths=sorted(writable.disk_paths.values()))
                    written = 0
                    for disk in manifest.disks:
                        written += await self._store.restore_disk(
                            manifest.ref, disk.target, writable.disks[disk.target]
                        )
                    await op.stage(Stage.DEFINING)
            except HypervisorError as exc:
                raise OperationFailed(
                    f"{exc.detail}; nothing was defined and no disk was left behind",
                    vm=new_name or vm_name,
                    vm_state="not defined",
                ) from exc
            restored = await self._hv.get_vm(writable.vm_name)
            state = await self._hv.state(restored)
            if new_name is None and _ran(target):
                await op.stage(Stage.STARTING)
                await self._hv.start(restored)
                state = await self._hv.state(restored)
            op.outcome = (
                f"defined {restored.name} from {target.label} ({manifest.ref.point_id}); "
                f"VM {state.value}"
            )
        return BackupRestoreResult(
            target, None, restored.name, True, written, time.monotonic() - started, state
        )

    # -- deleting, verifying, reclaiming -----------------------------------------------------

    async def delete_point(self, snapshot: Snapshot) -> None:
        """Remove a record's restore point from the store (the caller holds the VM's lock and
        removes the record). No other point loses anything: its space returns at the next
        garbage collection (``reclaim``)."""
        if snapshot.point_id is None:
            return
        try:
            await self._store.delete_point(PointRef(snapshot.vm_uuid, snapshot.point_id))
        except RestorePointNotFound:
            logger.info("restore point %s was already gone from the store", snapshot.point_id)
        self._changed()

    async def reclaim(self) -> GcReport:
        """Free the space of chunks no restore point needs any more, sparing any a running
        backup or restore may be about to use."""
        return await self._store.collect_garbage()

    async def verify(self, vm_name: str | None, label: str | None, *, actor: Actor) -> VerifyResult:
        """Re-read every stored piece the chosen points need (one VM's, one point, or all)
        and check it against its checksum; mark the records of damaged points, and clear the
        mark of points that are whole again."""
        kind = OperationKind.VERIFY
        started = time.monotonic()
        async with self._runner.refusals_audited(kind, actor, vm_name or "*") as refusal:
            rows = [r for r in await self._catalogue.snapshots() if r.kind.in_backup_store]
            chosen = rows
            if vm_name is not None:
                vm_uuid = await self._uuid_for(vm_name, rows)
                refusal.vm_uuid = vm_uuid
                chosen = [r for r in rows if r.vm_uuid == vm_uuid]
                if label is not None:
                    chosen = [await self._stored_target(vm_uuid, vm_name, label, None)]

        refs = [PointRef(r.vm_uuid, r.point_id) for r in chosen if r.point_id is not None]
        if vm_name is None:
            report = await self._store.verify(None)
        else:
            report = _merge([await self._store.verify(ref) for ref in refs])
        damaged_refs = set(report.damaged_points)
        checked = set(report.points_checked)
        damaged: list[Snapshot] = []
        repaired: list[Snapshot] = []
        for row in rows:
            if row.point_id is None:
                continue
            ref = PointRef(row.vm_uuid, row.point_id)
            if ref in damaged_refs:
                what = _damage_text(report)
                await self._catalogue.set_backup_damage(row.vm_uuid, row.libvirt_name, what)
                damaged.append(replace(row, damage=what))
            elif ref in checked and row.damage is not None:
                await self._catalogue.set_backup_damage(row.vm_uuid, row.libvirt_name, None)
                repaired.append(replace(row, damage=None))
        await self._runner.record_summary(
            kind,
            actor,
            vm_name or "*",
            ok=True,
            outcome=(
                f"verified {len(report.points_checked)} restore points, "
                f"{report.chunks_checked} pieces: "
                + (
                    "all whole"
                    if report.ok
                    else f"{len(report.damaged_chunks)} damaged and "
                    f"{len(report.missing_chunks)} missing pieces, {len(damaged)} points affected"
                )
            ),
            vm_uuid=chosen[0].vm_uuid if vm_name is not None and chosen else "",
        )
        return VerifyResult(report, tuple(damaged), tuple(repaired), time.monotonic() - started)

    # -- internals ---------------------------------------------------------------------------

    def _source(
        self,
        vm: Vm,
        export: DiskExport,
        kind: BackupKind,
        label: str,
        description: str,
        actor: Actor,
        *,
        created_by: str | None = None,
    ) -> BackupSource:
        return BackupSource(
            vm_uuid=vm.uuid,
            vm_name=vm.name,
            kind=kind,
            domain_xml=export.domain_xml,
            disks=export.disks,
            blobs=export.blobs,
            description=description,
            label=label,
            created_by=created_by or actor.user,
            consistency=export.consistency,
        )

    def _record(
        self, vm: Vm, manifest: Manifest, *, origin: Origin, captured: CapturedState
    ) -> Snapshot:
        return replace(record_of_point(manifest, vm.name), origin=origin, captured_state=captured)

    async def _refuse_taken_label(self, vm: Vm, label: str) -> None:
        rows = await self._catalogue.snapshots(vm.uuid)
        await self._snapshots.refuse_taken_label(vm, label, rows)

    async def _record_by_name(self, vm_uuid: str, libvirt_name: str) -> Snapshot | None:
        for row in await self._catalogue.snapshots(vm_uuid):
            if row.libvirt_name == libvirt_name:
                return row
        return None

    async def _stored_target(
        self, vm_uuid: str, vm_name: str, label: str, libvirt_name: str | None
    ) -> Snapshot:
        """The VM's record ``label`` that is a restore point in the store."""
        rows = await self._catalogue.snapshots(vm_uuid)
        owner = Vm(vm_uuid, vm_name, VmState.OTHER, 0)
        target = await self._snapshots.lookup(owner, rows, label, libvirt_name)
        if not target.kind.in_backup_store or target.point_id is None:
            raise InvalidInput(
                f"{target.label} of {vm_name} is a full snapshot inside the VM's image, not in "
                "the backup store: restore it with /restore (it brings memory back too)"
            )
        if target.status is CatalogueStatus.MISSING:
            raise SnapshotMissing(vm_name, target.label)
        return target

    async def _manifest(self, vm_name: str, target: Snapshot) -> Manifest:
        assert target.point_id is not None
        try:
            return await self._store.manifest(PointRef(target.vm_uuid, target.point_id))
        except RestorePointNotFound:
            await self._catalogue.set_snapshot_status(
                target.vm_uuid, target.libvirt_name, CatalogueStatus.MISSING
            )
            raise SnapshotMissing(vm_name, target.label) from None

    async def _source_vm(self, vm_name: str) -> tuple[Vm, bool]:
        """The VM a restore point belongs to: the one in libvirt, or, when it no longer
        exists, one known from the catalogue's records (or the store's manifests)."""
        try:
            return await self._hv.get_vm(vm_name), True
        except VmNotFound:
            pass
        rows = [
            r
            for r in await self._catalogue.snapshots()
            if r.vm_name == vm_name and r.kind.in_backup_store
        ]
        if rows:
            return Vm(rows[-1].vm_uuid, vm_name, VmState.OTHER, 0), False
        for manifest in await self._store.list_points():
            if manifest.vm_name == vm_name:
                await sync_points(self._store, self._catalogue, manifest.ref.vm_uuid, vm_name)
                return Vm(manifest.ref.vm_uuid, vm_name, VmState.OTHER, 0), False
        names = sorted(
            {v.name for v in await self._hv.list_vms()}
            | {r.vm_name for r in await self._catalogue.snapshots() if r.kind.in_backup_store}
        )
        raise VmNotFound(vm_name, closest(vm_name, names))

    async def _vm_exists(self, name: str) -> bool:
        try:
            await self._hv.get_vm(name)
        except VmNotFound:
            return False
        return True

    async def _uuid_for(self, vm_name: str, rows: list[Snapshot]) -> str:
        try:
            return (await self._hv.get_vm(vm_name)).uuid
        except VmNotFound:
            for row in rows:
                if row.vm_name == vm_name:
                    return row.vm_uuid
            names = {v.name for v in await self._hv.list_vms()} | {r.vm_name for r in rows}
            raise VmNotFound(vm_name, closest(vm_name, sorted(names))) from None

    def _failed_in_place(self, vm: Vm, exc: CoreError, safety: Snapshot | None) -> OperationFailed:
        """A write back that failed: the VM is shut off, its disks maybe partly written; say
        how to get back."""
        detail = exc.detail if isinstance(exc, HypervisorError) else str(exc)
        way_back = (
            f"revert to the safety snapshot {safety.label} to get the state before the restore"
            if safety is not None
            else "no safety snapshot was taken"
        )
        return OperationFailed(
            f"{detail}; the VM is left shut off and its disks may be partly restored: {way_back}",
            vm=vm.name,
            vm_state=VmState.SHUT_OFF.value,
        )


def _ran(snapshot: Snapshot) -> bool:
    """Whether the VM ran when the restore point was taken, so a restore starts it again: read
    while running, or (archived) a full snapshot taken running, whose disks come back without
    its memory and boot."""
    return consistency_of(snapshot) in _RAN or snapshot.captured_state is CapturedState.RUNNING


def _captured(export: DiskExport) -> CapturedState:
    return (
        CapturedState.SHUT_OFF
        if export.consistency is Consistency.SHUT_OFF
        else CapturedState.RUNNING
    )


def _damage_text(report: VerifyReport) -> str:
    pieces = len(report.damaged_chunks) + len(report.missing_chunks)
    files = ", ".join(report.damaged_files)
    parts = []
    if pieces:
        parts.append(f"{pieces} stored pieces damaged or missing")
    if files:
        parts.append(f"damaged files: {files}")
    return "; ".join(parts) or "damaged"


def _merge(reports: list[VerifyReport]) -> VerifyReport:
    if not reports:
        return VerifyReport((), 0, 0, (), (), ())
    return VerifyReport(
        points_checked=tuple(p for r in reports for p in r.points_checked),
        chunks_checked=sum(r.chunks_checked for r in reports),
        bytes_checked=sum(r.bytes_checked for r in reports),
        damaged_chunks=tuple(sorted({c for r in reports for c in r.damaged_chunks})),
        missing_chunks=tuple(sorted({c for r in reports for c in r.missing_chunks})),
        damaged_points=tuple(sorted({p for r in reports for p in r.damaged_points})),
        damaged_files=tuple(sorted({f for r in reports for f in r.damaged_files})),
    )


__all__ = [
    "ArchiveResult",
    "BackupRestoreResult",
    "BackupResult",
    "BackupService",
    "VerifyResult",
    "check_vm_name",
    "consistency_of",
]
