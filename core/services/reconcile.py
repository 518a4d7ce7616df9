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
from dataclasses import dataclass, field
from datetime import timedelta

from core.domain.operation import Operation, OperationKind, OperationStatus, Recovery, Stage
from core.domain.snapshot import (
    CatalogueStatus,
    HypervisorSnapshot,
    Origin,
    Snapshot,
    SnapshotKind,
    is_generated_name,
    label_for_external,
    split_libvirt_description,
    validate_label,
)
from core.domain.vm import Vm, VmState
from core.errors import CoreError, InvalidLabel, VmNotFound
from core.ports import Catalogue, Clock, Hypervisor, RunningOperation

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=60)
# A revert keeps running inside libvirtd after its client died; give it time to land.
REVERT_SETTLE_SECONDS = 30.0


@dataclass
class SyncReport:
    """What ``sync_vm`` changed."""

    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)


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
    rows = {s.libvirt_name: s for s in await catalogue.snapshots(vm.uuid)}
    taken = {s.label for s in rows.values()}
    need_sizes = False
    for name, hs in present.items():
        row = rows.get(name)
        if row is None:
            label = _label_for(hs, taken)
            taken.add(label)
            await catalogue.add_snapshot(
                Snapshot(
                    vm_uuid=vm.uuid,
                    vm_name=vm.name,
                    libvirt_name=name,
                    label=label,
                    description=split_libvirt_description(hs.description)[1],
                    kind=SnapshotKind.FULL,
                    captured_state=hs.captured_state,
                    has_memory=hs.has_memory,
                    created_at=hs.created_at,
                    created_by="snapbot (recovered)" if is_generated_name(name) else "libvirt",
                    origin=Origin.MANUAL if is_generated_name(name) else Origin.EXTERNAL,
                    status=CatalogueStatus.PRESENT,
                    memory_bytes=None,
                )
            )
            report.added.append(label)
            need_sizes = need_sizes or hs.has_memory
        elif row.status is CatalogueStatus.MISSING:
            await catalogue.set_snapshot_status(vm.uuid, name, CatalogueStatus.PRESENT)
            report.returned.append(row.label)
        elif row.has_memory and row.memory_bytes is None:
            need_sizes = True
    for name, row in rows.items():
        if name not in present and row.status is CatalogueStatus.PRESENT:
            await catalogue.set_snapshot_status(vm.uuid, name, CatalogueStatus.MISSING)
            report.missing.append(row.label)
    if need_sizes:
        await refresh_memory_sizes(hypervisor, catalogue, vm)
    if report.added or report.missing or report.returned:
        logger.info(
            "catalogue sync for %s: added %s, missing %s, back %s",
            vm.name,
            report.added,
            report.missing,
            report.returned,
        )
    return report


async def refresh_memory_sizes(hypervisor: Hypervisor, catalogue: Catalogue, vm: Vm) -> None:
    """Record the saved-memory size of each of the VM's snapshots, where it can be measured."""
    sizes = await hypervisor.memory_state_sizes(vm)
    if not sizes:
        return
    for row in await catalogue.snapshots(vm.uuid):
        if row.libvirt_name in sizes and row.memory_bytes != sizes[row.libvirt_name]:
            await catalogue.set_memory_bytes(vm.uuid, row.libvirt_name, sizes[row.libvirt_name])


def _label_for(hs: HypervisorSnapshot, taken: set[str]) -> str:
    recorded, _ = split_libvirt_description(hs.description)
    if recorded is not None and recorded not in taken:
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
        self, hypervisor: Hypervisor, catalogue: Catalogue, clock: Clock, owner: str
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._clock = clock
        self._owner = owner

    def _abandoned(self, running: RunningOperation) -> bool:
        if running.owner == self._owner:
            return False
        if not running.owner or not _owner_is_alive(running.owner):
            return True
        return self._clock.now() - running.heartbeat_at > STALE_AFTER

    async def recover_interrupted(self) -> list[Operation]:
        """Finish every operation whose process died; return them as now recorded."""
        finished = []
        for running in await self._catalogue.running_operations():
            if not self._abandoned(running):
                continue
            op = running.operation
            try:
                outcome = await self._reconcile(op)
            except CoreError as exc:
                outcome = f"interrupted; could not check libvirt ({exc}); VM state unknown"
            finished.append(
                await self._catalogue.finish_operation(
                    op.id, OperationStatus.RECONCILED, outcome=outcome
                )
            )
            logger.warning(
                "reconciled interrupted %s on %s: %s", op.kind.value, op.vm_name, outcome
            )
        return finished

    async def sync_all(self) -> dict[str, SyncReport]:
        """Sync every VM that no operation holds; mark snapshots of vanished VMs missing."""
        busy = {r.operation.vm_uuid for r in await self._catalogue.running_operations()}
        reports = {}
        vms = await self._hv.list_vms()
        for vm in vms:
            if vm.uuid not in busy:
                reports[vm.name] = await sync_vm(self._hv, self._catalogue, vm)
        known = {vm.uuid for vm in vms}
        for row in await self._catalogue.snapshots():
            if row.vm_uuid not in known and row.status is CatalogueStatus.PRESENT:
                await self._catalogue.set_snapshot_status(
                    row.vm_uuid, row.libvirt_name, CatalogueStatus.MISSING
                )
        return reports

    async def _reconcile(self, op: Operation) -> str:
        try:
            vm = await self._hv.get_vm_by_uuid(op.vm_uuid)
        except VmNotFound:
            return "interrupted; the VM no longer exists in libvirt"
        name = op.libvirt_name
        pre_state = str(op.details.get("pre_state", ""))
        stage = op.stage.value if op.stage else "start"
        if op.kind is OperationKind.SNAPSHOT:
            listing = await self._hv.list_snapshots(vm)
            exists = any(s.libvirt_name == name for s in listing)
            await sync_vm(self._hv, self._catalogue, vm, listing)
            if exists and op.snapshot_label:
                await self._restore_label(vm, name or "", op.snapshot_label)
            state = await self._settle(vm, pre_state)
            made = "the snapshot was completed and is kept" if exists else "no snapshot was made"
            return f"interrupted during {stage}; {made}; the VM is {state.value}"
        if op.kind is OperationKind.RESTORE:
            return await self._reconcile_restore(vm, op, pre_state, stage)
        if op.kind is OperationKind.DELETE:
            listing = await self._hv.list_snapshots(vm)
            still = any(s.libvirt_name == name for s in listing)
            if not still and name:
                await self._catalogue.remove_snapshot(vm.uuid, name)
            else:
                await sync_vm(self._hv, self._catalogue, vm, listing)
            return "interrupted; the snapshot " + ("still exists" if still else "was deleted")
        return f"interrupted during {stage}; nothing in libvirt was being changed"

    async def _restore_label(self, vm: Vm, libvirt_name: str, label: str) -> None:
        rows = await self._catalogue.snapshots(vm.uuid)
        if any(r.label == label for r in rows):
            return
        await self._catalogue.relabel_snapshot(vm.uuid, libvirt_name, label)

    async def _reconcile_restore(self, vm: Vm, op: Operation, pre_state: str, stage: str) -> str:
        state = await self._hv.state(vm)
        target_has_memory = bool(op.details.get("target_has_memory"))
        replacing = op.stage in (Stage.REPLACING_DISK_AND_MEMORY, Stage.STARTING)
        if replacing and target_has_memory:
            # A memory revert ends paused (we revert with REVERT_PAUSED), so shut off means
            # libvirtd has not finished it yet: wait for it rather than report a transient state.
            waited = 0.0
            while state is VmState.SHUT_OFF and waited < REVERT_SETTLE_SECONDS:
                await asyncio.sleep(1.0)
                waited += 1.0
                state = await self._hv.state(vm)
        if state is VmState.PAUSED and target_has_memory:
            await self._hv.resume(vm)
            state = await self._hv.state(vm)
            return (
                f"interrupted during {stage}; the revert had completed, the VM was "
                f"{Recovery.RESUMED.value} and is {state.value}"
            )
        if (
            state is VmState.SHUT_OFF
            and pre_state == VmState.RUNNING.value
            and op.stage in (None, Stage.CHECKING, Stage.SAFETY_SNAPSHOT, Stage.STOPPING)
        ):
            # Stopped before its disk was touched: bring it back as it was.
            await self._hv.start(vm)
            state = await self._hv.state(vm)
            return (
                f"interrupted during {stage}, before the disk was replaced; the VM was "
                f"{Recovery.STARTED.value} and is {state.value}"
            )
        await sync_vm(self._hv, self._catalogue, vm)
        if state is VmState.SHUT_OFF and replacing and target_has_memory:
            return (
                f"interrupted during {stage}; the revert did not complete; the VM is "
                f"{state.value}: run the restore again, or start the VM"
            )
        return f"interrupted during {stage}; the VM is {state.value}"

    async def _settle(self, vm: Vm, pre_state: str) -> VmState:
        state = await self._hv.state(vm)
        if state is VmState.PAUSED and pre_state == VmState.RUNNING.value:
            await self._hv.resume(vm)
            state = await self._hv.state(vm)
        return state
