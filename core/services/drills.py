"""Restore drills: a VM's restore point brought up as an isolated throwaway VM, judged ready by a
signal that fits the guest, and removed again, whatever happened.

The original VM is never touched. A point in the backup store is read from the store alone (no
lock on the VM at all); a full snapshot inside the VM's images is copied out under the VM's
lock, held only while its disk state is read (its memory state is not part of a drill). Each
drill is recorded (``DrillStore``) when it starts and when it ends, and audited as a DRILL
operation; a second drill of the same VM at once is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from core.domain.backups import DiskReader, DiskWriter, PointRef, RestorePointNotFound
from core.domain.drills import (
    SCREENSHOT_MAX_BYTES,
    DrillFailed,
    DrillPolicies,
    DrillPolicy,
    DrillResult,
    DrillSource,
    ReadySignal,
    choose_signal,
    clip_error,
    drilled_within,
    new_drill_id,
    throwaway_name,
)
from core.domain.drills import Drill as DrillRecord
from core.domain.names import closest
from core.domain.operation import (
    SCHEDULER_VIA,
    Actor,
    OperationKind,
    ProgressCallback,
    Stage,
    no_progress,
)
from core.domain.snapshot import CatalogueStatus, Snapshot, SnapshotKind
from core.domain.vm import Vm, VmState
from core.errors import (
    Conflict,
    CoreError,
    HypervisorError,
    InvalidInput,
    SnapshotMissing,
    VmNotFound,
)
from core.ports import (
    BackupStore,
    Catalogue,
    Clock,
    DiskAccess,
    DrillLab,
    DrillStore,
    Hypervisor,
    ThrowawayVm,
)
from core.services.operations import OperationRunner
from core.services.snapshots import SnapshotService

logger = logging.getLogger(__name__)

# A drill still marked running after this long died with its process: its record is marked
# failed and its throwaway VM swept. Longer than any restore plus boot should take.
DRILL_STALE_AFTER = timedelta(hours=6)
# Copying a disk through the store's readers and writers: the size of one read.
_COPY_BLOCK = 4 * 1024 * 1024


class DrillCatalogue(Catalogue, DrillStore, Protocol):
    """The catalogue, with drill records."""


@dataclass(frozen=True, slots=True)
class DrillOutcome:
    """One drill, as the report in the channel tells it."""

    drill: DrillRecord
    # What said the VM was ready (None: the drill failed before one could be chosen).
    signal: ReadySignal | None
    # Whom the report mentions: the VM's configured owner, else who asked.
    owner: str | None
    # A full snapshot's drill boots its disk state only.
    memory_not_included: bool
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.drill.result is DrillResult.PASSED


@dataclass(frozen=True, slots=True)
class DrillStatus:
    """A VM and its last passing drill, for the Home tab and the weekly report."""

    vm_uuid: str
    vm_name: str
    last_passed: DrillRecord | None
    overdue: bool


class DrillService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: DrillCatalogue,
        lab: DrillLab,
        runner: OperationRunner,
        clock: Clock,
        snapshots: SnapshotService,
        policies: DrillPolicies,
        *,
        disks: DiskAccess | None,
        store: BackupStore | None,
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._lab = lab
        self._runner = runner
        self._clock = clock
        self._snapshots = snapshots
        self._policies = policies
        self._disks = disks
        self._store = store

    # -- running one ----------------------------------------------------------------------------

    async def run(
        self,
        vm_name: str,
        label: str | None = None,
        *,
        actor: Actor,
        progress: ProgressCallback = no_progress,
    ) -> DrillOutcome:
        """Drill the restore point ``label`` of the VM (its newest when None). A drill that
        ran reports pass or fail in its outcome; only a request that could not start one (no
        such VM or point, a drill of it running already, no readiness signal for a guest that
        has no agent) raises, audited as refused."""
        kind = OperationKind.DRILL
        policy = self._policies.for_vm(vm_name)
        async with self._runner.refusals_audited(kind, actor, vm_name) as refusal:
            vm = await self._vm(vm_name)
            refusal.vm_uuid = vm.uuid
            target = await self._target(vm, label)
            if target.kind.in_backup_store and self._store is None:
                raise InvalidInput(
                    f"{target.label} of {vm.name} is in the backup store, and none is "
                    "configured: set SNAPBOT_BACKUP_DIR to the store's directory"
                )
            if not target.kind.in_backup_store and self._disks is None:
                raise InvalidInput(
                    f"{target.label} of {vm.name} is a full snapshot, and this snapbot cannot "
                    "read VMs' disks (it needs a local libvirt URI and SNAPBOT_BACKUP_DIR)"
                )
            domain_xml, sizes, blobs = await self._configuration(vm, target)
            signal = None
            if domain_xml is not None:
                guest = self._lab.inspect(domain_xml)
                signal = choose_signal(policy, has_agent=guest.has_agent, vm_name=vm.name)
            await self.sweep()
            started = self._clock.now()
            drill_id = new_drill_id()
            record = DrillRecord(
                id=drill_id,
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                label=target.label,
                libvirt_name=target.libvirt_name,
                point_id=target.point_id,
                source=DrillSource.STORE if target.kind.in_backup_store else DrillSource.INTERNAL,
                point_created_at=target.created_at,
                started_at=started,
                requested_by=actor.user,
                throwaway_name=throwaway_name(vm.name, drill_id),
            )
            if not await self._catalogue.begin_drill(record, stale_after=DRILL_STALE_AFTER):
                raise Conflict(
                    f"a drill of {vm.name} is running already: wait for its report, one drill "
                    "of a VM at a time"
                )
        owner = policy.owner or (actor.user if actor.via != SCHEDULER_VIA else None)
        memory = target.kind is SnapshotKind.FULL and target.has_memory
        t0 = time.monotonic()
        try:
            if target.kind.in_backup_store:
                assert domain_xml is not None
                assert signal is not None
                drill, notes = await self._from_store(
                    record, target, domain_xml, sizes, blobs, signal, policy.timeout, progress
                )
            else:
                drill, signal, notes = await self._from_internal(
                    vm, record, target, actor, policy, progress
                )
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise  # cancelled: the record stays RUNNING until the sweep marks it
            failed = replace(
                record,
                result=DrillResult.FAILED,
                finished_at=self._clock.now(),
                error=clip_error(_describe(exc)),
            )
            await self._end(failed, actor, t0)
            if not isinstance(exc, CoreError):
                raise
            return DrillOutcome(failed, signal, owner, memory)
        await self._end(drill, actor, t0)
        return DrillOutcome(drill, signal, owner, memory, tuple(notes))

    async def _from_store(
        self,
        record: DrillRecord,
        target: Snapshot,
        domain_xml: str,
        sizes: dict[str, int],
        blobs: dict[str, bytes],
        signal: ReadySignal,
        within: float,
        progress: ProgressCallback,
    ) -> tuple[DrillRecord, list[str]]:
        assert self._store is not None
        assert target.point_id is not None
        ref = PointRef(target.vm_uuid, target.point_id)
        store = self._store
        async with self._lab.throwaway_vm(
            domain_xml, sizes, blobs, name=record.throwaway_name
        ) as vm:
            await _report(progress, Stage.WRITING_DISKS)
            for disk in sizes:
                await store.restore_disk(ref, disk, vm.disks[disk])
            return await self._boot(record, vm, signal, within, progress), []

    async def _from_internal(
        self,
        vm: Vm,
        record: DrillRecord,
        target: Snapshot,
        actor: Actor,
        policy: DrillPolicy,
        progress: ProgressCallback,
    ) -> tuple[DrillRecord, ReadySignal, list[str]]:
        """A full snapshot's disk state, copied out under the VM's lock (held only for the
        copy: the operation ends before the copy boots), then booted without its memory."""
        assert self._disks is not None
        disks = self._disks
        async with contextlib.AsyncExitStack() as stack:
            async with self._runner.run(
                OperationKind.DRILL, vm, actor, progress, label=target.label
            ) as op:
                await op.record(libvirt_name=target.libvirt_name, throwaway=record.throwaway_name)
                await op.stage(Stage.READING_DISKS)
                async with disks.snapshot_view(vm, target.libvirt_name) as export:
                    guest = self._lab.inspect(export.domain_xml)
                    signal = choose_signal(policy, has_agent=guest.has_agent, vm_name=vm.name)
                    sizes = {t: r.size for t, r in export.disks.items()}
                    throwaway = await stack.enter_async_context(
                        self._lab.throwaway_vm(
                            export.domain_xml, sizes, export.blobs, name=record.throwaway_name
                        )
                    )
                    await op.stage(Stage.WRITING_DISKS)
                    for name, reader in export.disks.items():
                        await asyncio.to_thread(_copy, reader, throwaway.disks[name])
                op.outcome = (
                    f"copied the disk state of {target.label} into {record.throwaway_name} "
                    "for a restore drill (the VM's lock is released before it boots)"
                )
            drill = await self._boot(record, throwaway, signal, policy.timeout, progress)
        return drill, signal, [export.note] if export.note else []

    async def _boot(
        self,
        record: DrillRecord,
        throwaway: ThrowawayVm,
        signal: ReadySignal,
        within: float,
        progress: ProgressCallback,
    ) -> DrillRecord:
        """Start the throwaway VM, wait for its signal, take its screenshot (also of one that
        failed: a kernel panic on screen says more than a timeout)."""
        await _report(progress, Stage.STARTING)
        await throwaway.start()
        await _report(progress, Stage.VERIFYING)
        try:
            ready = await throwaway.wait_ready(signal, within)
        except DrillFailed as exc:
            shot = _kept(await throwaway.screenshot())
            return replace(
                record,
                result=DrillResult.FAILED,
                finished_at=self._clock.now(),
                error=clip_error(exc.detail),
                screenshot=shot,
            )
        shot = _kept(await throwaway.screenshot())
        return replace(
            record,
            result=DrillResult.PASSED,
            finished_at=self._clock.now(),
            ready_seconds=ready,
            screenshot=shot,
        )

    async def _end(self, drill: DrillRecord, actor: Actor, t0: float) -> None:
        await self._catalogue.finish_drill(drill)
        passed = drill.result is DrillResult.PASSED
        outcome = (
            f"drill of {drill.label} ({drill.throwaway_name}): "
            + (
                f"passed, ready after {drill.ready_seconds:.0f} s"
                if passed and drill.ready_seconds is not None
                else f"failed: {drill.error}"
            )
            + f"; {time.monotonic() - t0:.0f} s in all"
        )
        await self._runner.record_summary(
            OperationKind.DRILL,
            actor,
            drill.vm_name,
            ok=passed,
            outcome=outcome,
            vm_uuid=drill.vm_uuid,
        )

    # -- many, and what they add up to -----------------------------------------------------------

    async def due(self, vm_names: list[str], *, days: int) -> list[str]:
        """Of ``vm_names``, those without a passing drill in the last ``days`` days."""
        drills = list((await self._catalogue.last_passed_drills()).values())
        now = self._clock.now()
        found = []
        for name in vm_names:
            try:
                vm = await self._hv.get_vm(name)
            except VmNotFound:
                continue
            if not drilled_within(drills, vm.uuid, now, days):
                found.append(name)
        return found

    async def status(
        self, *, overdue_days: int = 35, vms: Sequence[Vm] | None = None
    ) -> list[DrillStatus]:
        """Every VM on the hypervisor (or of ``vms``, a listing the caller already has) with
        its last passing drill; overdue without one in ``overdue_days`` days."""
        last = await self._catalogue.last_passed_drills()
        limit = self._clock.now() - timedelta(days=overdue_days)
        found = []
        listed = await self._hv.list_vms() if vms is None else vms
        for vm in sorted(listed, key=lambda v: v.name):
            drill = last.get(vm.uuid)
            found.append(
                DrillStatus(vm.uuid, vm.name, drill, drill is None or drill.started_at < limit)
            )
        return found

    async def sweep(self) -> list[str]:
        """Remove what drills of a process that died left behind: throwaway VMs and their
        files, and their records still marked running. Safe to call any time (start-up, each
        drill): only what is older than ``DRILL_STALE_AFTER`` and carries snapbot's mark."""
        removed: list[str] = []
        try:
            removed = await self._lab.sweep_leftovers(DRILL_STALE_AFTER)
        except CoreError as exc:
            logger.warning("sweeping drills' leftovers failed: %s", exc)
        cutoff: datetime = self._clock.now() - DRILL_STALE_AFTER
        await self._catalogue.abandon_drills(
            cutoff, "snapbot stopped during the drill; its throwaway VM was removed afterwards"
        )
        return removed

    # -- internals --------------------------------------------------------------------------------

    async def _vm(self, vm_name: str) -> Vm:
        """The VM in libvirt, or one known only from its restore points (deleted since): its
        backups are worth drilling most of all."""
        try:
            return await self._hv.get_vm(vm_name)
        except VmNotFound:
            pass
        rows = [
            r
            for r in await self._catalogue.snapshots()
            if r.vm_name == vm_name and r.kind.in_backup_store
        ]
        if rows:
            return Vm(rows[-1].vm_uuid, vm_name, VmState.OTHER, 0)
        names = sorted({v.name for v in await self._hv.list_vms()})
        raise VmNotFound(vm_name, closest(vm_name, names))

    async def _target(self, vm: Vm, label: str | None) -> Snapshot:
        rows = await self._catalogue.snapshots(vm.uuid)
        if label is not None:
            target = await self._snapshots.lookup(vm, rows, label)
        else:
            present = [r for r in rows if r.status is CatalogueStatus.PRESENT]
            if not present:
                raise InvalidInput(
                    f"{vm.name} has no snapshot or restore point to drill: take one first "
                    f"(/snapshot {vm.name} <name>, or --incremental for the backup store)"
                )
            target = max(present, key=lambda r: r.created_at)
        if target.status is CatalogueStatus.MISSING:
            raise SnapshotMissing(vm.name, target.label)
        return target

    async def _configuration(
        self, vm: Vm, target: Snapshot
    ) -> tuple[str | None, dict[str, int], dict[str, bytes]]:
        """A store point's configuration, disk sizes and blobs (read from the store alone);
        for a full snapshot nothing yet: it is read under the VM's lock."""
        if not target.kind.in_backup_store:
            return None, {}, {}
        assert self._store is not None
        assert target.point_id is not None
        ref = PointRef(target.vm_uuid, target.point_id)
        try:
            manifest = await self._store.manifest(ref)
        except RestorePointNotFound:
            await self._catalogue.set_snapshot_status(
                target.vm_uuid, target.libvirt_name, CatalogueStatus.MISSING
            )
            raise SnapshotMissing(vm.name, target.label) from None
        blobs = {b.name: await self._store.read_blob(ref, b.name) for b in manifest.blobs}
        return manifest.domain_xml, {d.target: d.size for d in manifest.disks}, blobs


async def _report(progress: ProgressCallback, stage: Stage) -> None:
    try:
        await progress(stage)
    except Exception:
        logger.exception("progress callback failed during a drill")


def _kept(screenshot: bytes | None) -> bytes | None:
    """The screenshot, unless it is too large to keep with the drill's record (a graphical
    desktop at a high resolution): the drill is judged by its signal, not its picture."""
    if screenshot is not None and len(screenshot) > SCREENSHOT_MAX_BYTES:
        logger.warning("a drill's screenshot of %d bytes is not kept", len(screenshot))
        return None
    return screenshot


def _copy(source: DiskReader, target: DiskWriter) -> None:
    """A disk state, reader to writer (blocking: run in a thread); ranges known to be zeros
    are zeroed, not read."""
    offset = 0
    while offset < source.size:
        length = min(_COPY_BLOCK, source.size - offset)
        if source.reads_as_zeros(offset, length):
            target.zero(offset, length)
        else:
            target.write(offset, source.read(offset, length))
        offset += length


def _describe(exc: Exception) -> str:
    if isinstance(exc, HypervisorError):
        return exc.detail
    if isinstance(exc, CoreError):
        return str(exc)
    return f"internal error: {exc!r}"


__all__ = ["DRILL_STALE_AFTER", "DrillLab", "DrillOutcome", "DrillService", "DrillStatus"]
