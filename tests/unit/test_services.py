"""Use cases over the fake hypervisor and a real SQLite catalogue."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot import messages
from core.catalogue.models import OperationRow, VmLockRow
from core.domain.operation import OperationKind, OperationStatus, Stage
from core.domain.snapshot import CapturedState, CatalogueStatus, HypervisorSnapshot, Origin
from core.domain.vm import VmState
from core.errors import (
    HypervisorUnavailable,
    InsufficientSpace,
    InvalidLabel,
    LabelTaken,
    OperationFailed,
    RestoreFailed,
    SnapshotMissing,
    SnapshotNotFound,
    VmBusy,
    VmNotFound,
)
from core.ports import RunningOperation
from tests.conftest import ALICE, BOB, Services

WEB = "11111111-1111-1111-1111-111111111111"


async def statuses() -> list[str]:
    return [r.status for r in await OperationRow.all().order_by("started_at")]


async def test_create_running_vm_records_memory_snapshot_and_audit(services: Services) -> None:
    stages: list[Stage] = []

    async def progress(stage: Stage) -> None:
        stages.append(stage)

    result = await services.service.create_snapshot(
        "web-01", "before-upgrade", actor=ALICE, description="pg 15", progress=progress
    )
    snap = result.snapshot
    assert (snap.label, snap.has_memory, snap.captured_state) == (
        "before-upgrade",
        True,
        CapturedState.RUNNING,
    )
    assert snap.created_by == "U_ALICE"
    assert snap.origin is Origin.MANUAL
    assert snap.memory_bytes == 128 * 2**20
    assert stages == [Stage.CHECKING, Stage.SAVING_MEMORY_AND_DISK, Stage.VERIFYING]
    op = (await services.catalogue.operations())[0]
    assert op.status is OperationStatus.SUCCEEDED
    assert op.requested_by == "U_ALICE"
    assert op.channel == "C1"
    assert op.libvirt_name == snap.libvirt_name
    assert await VmLockRow.all().count() == 0
    # libvirt's own description carries the label, so a lost catalogue can be rebuilt
    hs = services.hv.vms[WEB].snapshots[snap.libvirt_name]
    assert hs.description.startswith("snapbot label: before-upgrade")


async def test_duplicate_label_and_bad_names_are_rejected_and_audited(services: Services) -> None:
    await services.service.create_snapshot("web-01", "a", actor=ALICE)
    with pytest.raises(LabelTaken):
        await services.service.create_snapshot("web-01", "a", actor=ALICE)
    with pytest.raises(InvalidLabel):
        await services.service.create_snapshot("web-01", "1234", actor=ALICE)
    with pytest.raises(VmNotFound) as info:
        await services.service.create_snapshot("web-1", "x", actor=ALICE)
    assert info.value.suggestions[:2] == ("web-01", "web-02")
    assert await statuses() == ["succeeded", "rejected", "rejected", "rejected"]
    assert len(services.hv.vms[WEB].snapshots) == 1


async def test_short_space_refuses_before_touching_libvirt(services: Services) -> None:
    services.hv.free_bytes = 100 * 2**20
    with pytest.raises(InsufficientSpace) as info:
        await services.service.create_snapshot("web-01", "x", actor=ALICE)
    assert services.hv.calls == []
    assert "Nothing was changed" in messages.error_text(info.value)


async def test_busy_vm_is_refused_with_holder_and_other_vms_run(services: Services) -> None:
    services.hv.delay = 0.3
    first = asyncio.create_task(services.service.create_snapshot("web-01", "a", actor=ALICE))
    await asyncio.sleep(0.1)
    with pytest.raises(VmBusy) as info:
        await services.service.delete_snapshot("web-01", "a", actor=BOB)
    assert info.value.holder.operation_kind == "snapshot"
    assert info.value.holder.requested_by == "U_ALICE"
    text = messages.error_text(info.value)
    assert "web-01 is busy: snapshot by U_ALICE since" in text
    # a different VM is not held up
    await services.service.create_snapshot("web-02", "b", actor=BOB)
    await first
    kinds = [(r.kind, r.status) for r in await OperationRow.all().order_by("started_at")]
    assert ("delete", "rejected") in kinds
    assert kinds.count(("snapshot", "succeeded")) == 2


async def test_restore_takes_safety_snapshot_and_comes_back_running(services: Services) -> None:
    await services.service.create_snapshot("web-01", "good", actor=ALICE)
    stages: list[Stage] = []

    async def progress(stage: Stage) -> None:
        stages.append(stage)

    result = await services.service.restore("web-01", "good", actor=BOB, progress=progress)
    assert result.vm_state is VmState.RUNNING
    assert result.safety is not None
    assert result.safety.origin is Origin.SAFETY
    assert stages == [
        Stage.CHECKING,
        Stage.SAFETY_SNAPSHOT,
        Stage.STOPPING,
        Stage.REPLACING_DISK_AND_MEMORY,
        Stage.STARTING,
    ]
    methods = [m for m, _ in services.hv.calls]
    assert methods == ["create_snapshot", "create_snapshot", "stop", "revert_snapshot", "resume"]


async def test_restore_without_safety_snapshot(services: Services) -> None:
    await services.service.create_snapshot("web-01", "good", actor=ALICE)
    result = await services.service.restore("web-01", "good", actor=BOB, safety_snapshot=False)
    assert result.safety is None
    assert [m for m, _ in services.hv.calls].count("create_snapshot") == 1


async def test_failed_revert_goes_back_to_safety_snapshot(services: Services) -> None:
    await services.service.create_snapshot("web-01", "good", actor=ALICE)
    services.hv.fail["revert_snapshot"] = OperationFailed("Device has active dirty bitmaps")
    with pytest.raises(RestoreFailed) as info:
        await services.service.restore("web-01", "good", actor=BOB)
    err = info.value
    assert err.vm_state == "running"
    assert err.recovery == "reverted to the safety snapshot"
    assert await services.hv.state(await services.hv.get_vm("web-01")) is VmState.RUNNING
    text = messages.error_text(err)
    assert "The VM is now *running*" in text
    assert "safety snapshot" in text
    op = (await services.catalogue.operations())[0]
    assert op.status is OperationStatus.FAILED
    assert "dirty bitmaps" in (op.error or "")


async def test_failed_revert_without_safety_starts_vm(services: Services) -> None:
    await services.service.create_snapshot("web-01", "good", actor=ALICE)
    services.hv.fail["revert_snapshot"] = OperationFailed("boom")
    with pytest.raises(RestoreFailed) as info:
        await services.service.restore("web-01", "good", actor=BOB, safety_snapshot=False)
    assert info.value.recovery == "started from its current disk"
    assert info.value.vm_state == "running"


async def test_failed_snapshot_resumes_a_paused_guest_and_says_so(services: Services) -> None:
    services.hv.fail["create_snapshot"] = OperationFailed("No space left on device")
    services.hv.state_after_failure["create_snapshot"] = VmState.PAUSED
    with pytest.raises(OperationFailed) as info:
        await services.service.create_snapshot("web-01", "x", actor=ALICE)
    assert info.value.vm_state == "running"
    assert "The VM is now *running*" in messages.error_text(info.value)
    assert await services.catalogue.snapshots(WEB) == []


async def test_connection_lost_during_create_checks_what_happened(services: Services) -> None:
    # libvirt made the snapshot but the answer was lost: it is found and recorded, not retried
    real_create = services.hv.create_snapshot

    async def create_then_drop(vm, name, description):  # type: ignore[no-untyped-def]
        await real_create(vm, name, description)
        raise HypervisorUnavailable("End of file while reading data")

    services.hv.create_snapshot = create_then_drop  # type: ignore[method-assign]
    result = await services.service.create_snapshot("web-01", "x", actor=ALICE)
    assert result.snapshot.label == "x"
    assert [m for m, _ in services.hv.calls].count("create_snapshot") == 1


async def test_delete_rename_and_suggestions(services: Services) -> None:
    await services.service.create_snapshot("web-01", "before-upgrade", actor=ALICE)
    await services.service.create_snapshot("web-01", "clean-install", actor=ALICE)
    with pytest.raises(SnapshotNotFound) as info:
        await services.service.delete_snapshot("web-01", "before-upgrad", actor=ALICE)
    assert info.value.suggestions[0] == "before-upgrade"
    renamed = await services.service.rename_snapshot(
        "web-01", "before-upgrade", "pre-pg15", actor=ALICE
    )
    assert renamed.new_label == "pre-pg15"
    with pytest.raises(LabelTaken):
        await services.service.rename_snapshot("web-01", "pre-pg15", "clean-install", actor=ALICE)
    # the libvirt name did not change, so restore still finds it
    result = await services.service.restore("web-01", "pre-pg15", actor=ALICE)
    assert result.snapshot.label == "pre-pg15"
    deleted = await services.service.delete_snapshot("web-01", "clean-install", actor=ALICE)
    assert deleted.freed_bytes == 2**20
    labels = {s.label for s in await services.catalogue.snapshots(WEB)}
    assert "clean-install" not in labels
    assert "pre-pg15" in labels


async def test_sync_adds_outside_snapshots_and_marks_missing(services: Services) -> None:
    created = await services.service.create_snapshot("web-01", "mine", actor=ALICE)
    fv = services.hv.vms[WEB]
    del fv.snapshots[created.snapshot.libvirt_name]  # deleted with virsh
    fv.snapshots["nightly"] = HypervisorSnapshot(
        "nightly",
        created.snapshot.created_at + timedelta(hours=1),
        CapturedState.SHUT_OFF,
        False,
        "",
        None,
        True,
        False,
    )
    groups = await services.service.list_snapshots("web-01")
    by_label = {s.label: s for s in groups[0].snapshots}
    assert by_label["mine"].status is CatalogueStatus.MISSING
    assert by_label["nightly"].origin is Origin.EXTERNAL
    text = messages.snapshots_table(groups)
    assert "MISSING from libvirt" in text
    assert "nightly" in text
    with pytest.raises(SnapshotMissing):
        await services.service.restore("web-01", "mine", actor=ALICE)


async def test_crashed_operation_is_reconciled_at_start(services: Services) -> None:
    # A process that died mid-create: its operation row and lock are left behind.
    vm = await services.hv.get_vm("web-01")
    op = services.service._runner.new_operation(
        OperationKind.SNAPSHOT, ALICE, vm_uuid=vm.uuid, vm_name=vm.name, label="lost"
    )
    await services.catalogue.begin_operation(op, "somehost:999999:dead")
    await services.catalogue.update_details(
        op.id, {"libvirt_name": "sb-gone", "pre_state": "running"}
    )
    running = await services.catalogue.running_operations()
    assert [r.operation.id for r in running] == [op.id]
    with pytest.raises(VmBusy):
        await services.service.create_snapshot("web-01", "x", actor=BOB)
    # same host as us, so the dead pid counts; make it look like this host
    import socket

    await VmLockRow.filter(operation_id=op.id).update(owner=f"{socket.gethostname()}:999999:dead")
    finished = await services.reconciler.recover_interrupted()
    assert [f.status for f in finished] == [OperationStatus.RECONCILED]
    assert "no snapshot was made" in (finished[0].outcome or "")
    assert await VmLockRow.all().count() == 0
    await services.service.create_snapshot("web-01", "x", actor=BOB)


async def test_live_operations_of_other_processes_are_left_alone(services: Services) -> None:
    vm = await services.hv.get_vm("web-01")
    op = services.service._runner.new_operation(
        OperationKind.RESTORE, ALICE, vm_uuid=vm.uuid, vm_name=vm.name
    )
    await services.catalogue.begin_operation(op, "otherhost:1:alive")
    assert await services.reconciler.recover_interrupted() == []
    running: list[RunningOperation] = await services.catalogue.running_operations()
    assert len(running) == 1
