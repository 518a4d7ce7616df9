"""``/snapshot unlock``: ending a VM lock that automation could not decide about.

Stale locks of dead processes are taken over automatically (``HypervisorWatch``); what is left
for a person is a lock whose owner looks alive (another replica that stopped heartbeating
late, a libvirt call past its deadline). The rule, from Proxmox's ``qm unlock``: only when
nothing is running. snapbot checks libvirt's job on the VM first, decides the interrupted
operation's outcome from evidence like a crash recovery does, and records who unlocked it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.domain.operation import Actor, Operation, OperationKind, OperationStatus, no_progress
from core.domain.vm import Vm
from core.errors import CoreError, InvalidInput, LibvirtJobRunning
from core.ports import Catalogue, Hypervisor
from core.services.operations import OperationRunner


class OutcomeJudge(Protocol):
    """Decides an interrupted operation's outcome from libvirt's evidence: the ``Reconciler``
    of the one hypervisor, or the ``Fleet`` (the operation's own host's reconciler)."""

    async def reconcile_one(self, op: Operation) -> str: ...


@dataclass(frozen=True, slots=True)
class LockPreview:
    """What holds a VM, for the admin to judge before unlocking."""

    vm: Vm
    operation: Operation
    owner: str
    heartbeat_at: datetime
    heartbeat_age_seconds: float
    # libvirt's own job on the domain: True running, False none, None unknown
    libvirt_job: bool | None


class LockService:
    """Preview and end a VM's lock (admin only: the front end checks ``Action.UNLOCK``)."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: Catalogue,
        runner: OperationRunner,
        reconciler: OutcomeJudge,
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._runner = runner
        self._reconciler = reconciler

    async def preview(self, vm_name: str) -> LockPreview:
        """Who holds ``vm_name`` and since when; ``InvalidInput`` when nobody does."""
        vm = await self._hv.get_vm(vm_name)
        now = await self._catalogue.database_now()
        for running in await self._catalogue.running_operations():
            if running.operation.vm_uuid == vm.uuid:
                return LockPreview(
                    vm=vm,
                    operation=running.operation,
                    owner=running.owner,
                    heartbeat_at=running.heartbeat_at,
                    heartbeat_age_seconds=(now - running.heartbeat_at).total_seconds(),
                    libvirt_job=await self._hv.job_active(vm),
                )
        raise InvalidInput(f"{vm.name} is not locked: no operation holds it")

    async def unlock(self, vm_name: str, operation_id: str, actor: Actor) -> Operation:
        """End the lock held by ``operation_id`` (the one the admin saw in the preview):
        refused while libvirt runs a job on the VM; the operation's outcome is decided from
        evidence and its record says who unlocked it. Audited as an UNLOCK operation."""
        async with self._runner.refusals_audited(OperationKind.UNLOCK, actor, vm_name):
            preview = await self.preview(vm_name)
            if preview.operation.id != operation_id:
                raise InvalidInput(
                    f"the lock on {preview.vm.name} changed since the preview (now held by "
                    f"{preview.operation.kind.value} of {preview.operation.requested_by}); "
                    "run unlock again to see it"
                )
            if preview.libvirt_job:
                raise LibvirtJobRunning(preview.vm.name)
            if not await self._catalogue.take_over(operation_id, preview.owner, self._runner.owner):
                raise InvalidInput(
                    f"another snapbot process took over the lock on {preview.vm.name} just now; "
                    "run unlock again to see what holds it"
                )
        try:
            outcome = await self._reconciler.reconcile_one(preview.operation)
        except CoreError as exc:
            outcome = f"unknown: libvirt could not be checked ({exc})"
        finished = await self._catalogue.finish_operation(
            operation_id,
            OperationStatus.RECONCILED,
            outcome=f"{outcome}; unlocked by {actor.user}",
        )
        self._runner.ended(finished)
        # The unlock itself is an operation on the VM like any other: audited, exclusive.
        async with self._runner.run(
            OperationKind.UNLOCK,
            preview.vm,
            actor,
            no_progress,
            details={"unlocked_operation": operation_id, "owner": preview.owner},
        ) as op:
            op.outcome = f"ended the lock of {finished.kind.value} {operation_id}: {outcome}"
        return finished
