"""The operation journal's writes per snapshot and restore (issue 12): few commits, and still
every fact a crash recovery needs stored before the libvirt call it is evidence for."""

from __future__ import annotations

import inspect
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.domain.operation import Operation, OperationStatus, Stage
from core.domain.snapshot import CapturedState, CatalogueStatus, HypervisorSnapshot
from core.domain.vm import Vm, VmState
from core.errors import InsufficientSpace, OperationFailed
from core.services.operations import OperationRunner
from core.services.reconcile import sync_vm
from core.services.snapshots import SnapshotService
from tests.conftest import ALICE, Services

WEB = "11111111-1111-1111-1111-111111111111"


class CountingCatalogue:
    """The catalogue, with the name of every call made through it."""

    def __init__(self, inner: TortoiseCatalogue) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr) or name == "heartbeat":
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await attr(*args, **kwargs)

        return counted


def counted_service(services: Services) -> tuple[SnapshotService, CountingCatalogue]:
    catalogue = CountingCatalogue(services.catalogue)
    runner = OperationRunner(catalogue, SystemClock(), services.owner)  # type: ignore[arg-type]
    service = SnapshotService(services.hv, catalogue, runner, SystemClock())  # type: ignore[arg-type]
    return service, catalogue


async def running(services: Services) -> Operation:
    [op] = await services.catalogue.running_operations()
    return op.operation


async def test_a_snapshot_is_three_commits_and_a_read(services: Services) -> None:
    service, catalogue = counted_service(services)

    result = await service.create_snapshot("web-01", "before-upgrade", actor=ALICE)

    assert catalogue.calls == [
        "begin_operation",  # the record, its lock and its first stage
        "snapshots",  # the sync's read, reused for the label check
        "record_progress",  # the snapshot's name and state with its stage, before libvirt
        "record_progress",  # verifying, once libvirt answered
        "end_operation",  # the snapshot's record with the operation's end
    ]
    # what the caller gets is what is stored, memory size included, without reading it back
    assert await services.catalogue.snapshots(WEB) == [result.snapshot]
    assert result.snapshot.memory_bytes == 128 * 2**20
    [op] = await services.catalogue.operations()
    assert (op.status, op.stage, op.libvirt_name) == (
        OperationStatus.SUCCEEDED,
        Stage.VERIFYING,
        result.snapshot.libvirt_name,
    )
    assert op.details["origin"] == "manual"
    assert op.details["host_uuid"] == services.hv.host


async def test_a_restore_is_six_commits_and_a_read(services: Services) -> None:
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    service, catalogue = counted_service(services)

    await service.restore("web-01", "base", actor=ALICE, safety_snapshot=False)

    assert catalogue.calls == [
        "begin_operation",
        "snapshots",
        "record_progress",  # stopping, with the target and the state before
        "record_progress",  # replacing
        "record_progress",  # the revert is issued
        "record_progress",  # starting: libvirt reported the revert done
        "end_operation",
    ]


async def test_what_recovery_reads_is_stored_before_each_libvirt_change(
    services: Services,
) -> None:
    """At each call that changes the VM, the stored record already holds what
    ``Reconciler`` decides from: what a SIGKILL at that moment would leave."""
    hv = services.hv
    seen: dict[str, Operation] = {}
    create, stop, revert = hv.create_snapshot, hv.stop, hv.revert_snapshot

    async def creating(vm: Vm, name: str, description: str) -> HypervisorSnapshot:
        seen.setdefault("create", await running(services))
        return await create(vm, name, description)

    async def stopping(vm: Vm) -> None:
        seen["stop"] = await running(services)
        await stop(vm)

    async def reverting(vm: Vm, libvirt_name: str, *, paused: bool) -> None:
        seen["revert"] = await running(services)
        await revert(vm, libvirt_name, paused=paused)

    hv.create_snapshot, hv.stop, hv.revert_snapshot = creating, stopping, reverting  # type: ignore[method-assign]
    base = (await services.service.create_snapshot("web-01", "base", actor=ALICE)).snapshot
    made = seen.pop("create")
    assert made.stage is Stage.SAVING_MEMORY_AND_DISK
    assert made.libvirt_name == base.libvirt_name
    assert (made.details["pre_state"], made.details["origin"]) == ("running", "manual")

    await services.service.restore("web-01", "base", actor=ALICE)
    safety = seen["create"]
    assert safety.stage is Stage.SAFETY_SNAPSHOT
    assert safety.libvirt_name == base.libvirt_name  # the target, written with that stage
    assert safety.details["target_has_memory"] is True
    assert str(safety.details["safety"]).startswith("sb-")
    assert seen["stop"].stage is Stage.STOPPING
    assert seen["stop"].details["safety"] == safety.details["safety"]
    revert_at = seen["revert"]
    assert revert_at.stage is Stage.REPLACING_DISK_AND_MEMORY
    assert revert_at.details["revert_issued"] is True
    assert (revert_at.details["pre_state"], revert_at.libvirt_name) == (
        "running",
        base.libvirt_name,
    )
    # the safety snapshot's record was filed before the revert, not with the end
    labels = {s.label for s in await services.catalogue.snapshots(WEB)}
    assert any(label.startswith("safety-") for label in labels)


async def test_the_first_stage_is_stored_with_the_operation(services: Services) -> None:
    hv = services.hv
    seen: list[Operation] = []
    job_active = hv.job_active

    async def checking(vm: Vm) -> bool:
        seen.append(await running(services))
        return await job_active(vm)

    hv.job_active = checking  # type: ignore[method-assign]
    await services.service.create_snapshot("web-01", "first", actor=ALICE)
    assert seen[0].stage is Stage.CHECKING


async def test_a_restore_noting_its_target_writes_it_with_the_end_when_no_stage_came(
    services: Services,
) -> None:
    """A restore refused after its target was chosen (the safety snapshot does not fit) still
    leaves the target in its audit record: the end writes what was noted."""
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    services.hv.free_bytes = 0
    with pytest.raises(InsufficientSpace):
        await services.service.restore("web-01", "base", actor=ALICE)
    op = (await services.catalogue.operations())[0]
    assert op.status is OperationStatus.REJECTED
    assert op.details["target_has_memory"] is True
    assert op.details["pre_state"] == "running"


async def test_a_sync_gives_the_records_as_the_catalogue_then_holds_them(
    services: Services,
) -> None:
    base = (await services.service.create_snapshot("web-01", "base", actor=ALICE)).snapshot
    gone = (await services.service.create_snapshot("web-01", "gone", actor=ALICE)).snapshot
    fv = services.hv.vms[WEB]
    del fv.snapshots[gone.libvirt_name]  # deleted with virsh
    later = base.created_at + timedelta(hours=1)
    for name, memory in (("nightly", True), ("disk-only", False)):
        fv.snapshots[name] = HypervisorSnapshot(
            name, later, CapturedState.RUNNING, memory, "", None, False, False
        )
    # a record of another host, as after a daemon restart changed its id
    await services.catalogue.claim_host(WEB, "old-host", "qemu:///old")
    vm = await services.hv.get_vm("web-01")
    counting = CountingCatalogue(services.catalogue)

    report = await sync_vm(services.hv, counting, vm)  # type: ignore[arg-type]

    # each new record goes in with its memory size: no second write for it, and no read back
    assert sorted(counting.calls) == sorted(
        ["snapshots", "claim_host", "add_snapshot", "add_snapshot", "set_snapshot_status"]
    )
    stored = await services.catalogue.snapshots(WEB)
    assert report.rows == stored
    assert {s.label: s.status for s in stored}["gone"] is CatalogueStatus.MISSING
    assert {s.host_uuid for s in stored} == {services.hv.host}
    assert [s.memory_bytes is not None for s in stored if s.label == "nightly"] == [True]

    # and back: a snapshot that returns is PRESENT again in both
    fv.snapshots[gone.libvirt_name] = replace(
        services.hv.vms[WEB].snapshots[base.libvirt_name], libvirt_name=gone.libvirt_name
    )
    report = await sync_vm(services.hv, services.catalogue, vm)
    assert report.rows == await services.catalogue.snapshots(WEB)
    assert report.returned == ["gone"]


async def test_a_guest_whose_qemu_died_in_the_save_is_reported_off_not_unknown(
    services: Services,
) -> None:
    """libvirt can still say "paused" right after QEMU was killed mid-save, then refuse the
    resume as "not running": the reply names the state libvirt gives after that refusal."""
    services.hv.fail["create_snapshot"] = OperationFailed("Unable to read from monitor")
    services.hv.state_after_failure["create_snapshot"] = VmState.PAUSED
    services.hv.fail["resume"] = OperationFailed("Requested operation is not valid")
    services.hv.state_after_failure["resume"] = VmState.SHUT_OFF

    with pytest.raises(OperationFailed) as info:
        await services.service.create_snapshot("web-01", "doomed", actor=ALICE)

    assert info.value.vm_state == "shut off"
    assert await services.catalogue.snapshots(WEB) == []
    [op] = await services.catalogue.operations()
    assert op.status is OperationStatus.FAILED
