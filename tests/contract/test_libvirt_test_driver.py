"""The libvirt adapter and the services against libvirt's test driver, a fresh host per test."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.domain.snapshot import CapturedState, Origin
from core.domain.vm import VmState
from core.errors import HypervisorTimeout, SnapshotNotFound, Unsupported, VmNotFound
from core.services.operations import OperationRunner, process_owner
from core.services.reconcile import Reconciler
from core.services.snapshots import SnapshotService
from tests.conftest import ALICE

NODE = Path(__file__).parent / "data" / "node.xml"


@pytest.fixture
async def hypervisor(tmp_path: Path) -> AsyncIterator[LibvirtHypervisor]:
    # test:///default is shared by the whole process; a file URI is a fresh host each time.
    node = tmp_path / "node.xml"
    shutil.copy(NODE, node)
    hv = LibvirtHypervisor(LibvirtConnection(f"test://{node}", workers=2))
    yield hv
    await hv.close()


@pytest.fixture
def service(hypervisor: LibvirtHypervisor, catalogue: TortoiseCatalogue) -> SnapshotService:
    clock = SystemClock()
    return SnapshotService(
        hypervisor, catalogue, OperationRunner(catalogue, clock, process_owner()), clock
    )


async def test_lists_vms_with_state(hypervisor: LibvirtHypervisor) -> None:
    vms = {v.name: v for v in await hypervisor.list_vms()}
    assert set(vms) == {"web-01", "db-01", "legacy-raw", "uefi-01"}
    assert vms["web-01"].state is VmState.RUNNING
    assert vms["web-01"].memory_bytes == 256 * 2**20
    with pytest.raises(VmNotFound):
        await hypervisor.get_vm("nope")


async def test_facts_read_disks_and_firmware(hypervisor: LibvirtHypervisor) -> None:
    facts = await hypervisor.vm_facts(await hypervisor.get_vm("web-01"))
    assert [(d.target, d.format_name, d.read_only) for d in facts.disks] == [
        ("vda", "qcow2", False),
        ("sda", "raw", True),
    ]
    assert not facts.uses_pflash
    assert facts.libvirt_version >= (9, 0, 0)
    uefi = await hypervisor.vm_facts(await hypervisor.get_vm("uefi-01"))
    assert uefi.uses_pflash


async def test_create_list_revert_delete_on_the_adapter(hypervisor: LibvirtHypervisor) -> None:
    vm = await hypervisor.get_vm("web-01")
    made = await hypervisor.create_snapshot(vm, "sb-one", "snapbot label: one")
    assert made.captured_state is CapturedState.RUNNING
    assert made.has_memory
    assert made.is_current
    await hypervisor.stop(vm)
    assert await hypervisor.state(vm) is VmState.SHUT_OFF
    await hypervisor.revert_snapshot(vm, "sb-one", paused=True)
    assert await hypervisor.state(vm) is VmState.PAUSED
    await hypervisor.resume(vm)
    assert await hypervisor.state(vm) is VmState.RUNNING
    await hypervisor.delete_snapshot(vm, "sb-one")
    assert await hypervisor.list_snapshots(vm) == []
    with pytest.raises(SnapshotNotFound):
        await hypervisor.delete_snapshot(vm, "sb-one")


async def test_service_round_trip_on_the_test_driver(service: SnapshotService) -> None:
    created = await service.create_snapshot("web-01", "before-upgrade", actor=ALICE)
    assert created.snapshot.has_memory
    off = await service.create_snapshot("db-01", "cold", actor=ALICE)
    assert off.snapshot.captured_state is CapturedState.SHUT_OFF
    assert not off.snapshot.has_memory
    restored = await service.restore("web-01", "before-upgrade", actor=ALICE)
    assert restored.vm_state is VmState.RUNNING
    assert restored.safety is not None
    assert restored.safety.origin is Origin.SAFETY
    await service.rename_snapshot("web-01", "before-upgrade", "pre-pg15", actor=ALICE)
    again = await service.restore("web-01", "pre-pg15", actor=ALICE, safety_snapshot=False)
    assert again.vm_state is VmState.RUNNING
    cold = await service.restore("db-01", "cold", actor=ALICE, safety_snapshot=False)
    assert cold.vm_state is VmState.SHUT_OFF
    await service.delete_snapshot("web-01", "pre-pg15", actor=ALICE)
    labels = [s.label for g in await service.list_snapshots("web-01") for s in g.snapshots]
    assert labels == [restored.safety.label]


async def test_unsupported_vms_are_refused_with_the_way_out(service: SnapshotService) -> None:
    with pytest.raises(Unsupported) as raw:
        await service.create_snapshot("legacy-raw", "x", actor=ALICE)
    assert "qemu-img convert" in raw.value.way_out
    with pytest.raises(Unsupported) as uefi:
        await service.create_snapshot("uefi-01", "x", actor=ALICE)
    assert "UEFI" in uefi.value.reason


async def test_catalogue_rebuilt_from_libvirt_after_loss(
    hypervisor: LibvirtHypervisor, service: SnapshotService, catalogue: TortoiseCatalogue
) -> None:
    made = await service.create_snapshot("web-01", "keep-me", actor=ALICE)
    vm = await hypervisor.get_vm("web-01")
    await catalogue.remove_snapshot(vm.uuid, made.snapshot.libvirt_name)  # catalogue lost it
    reconciler = Reconciler(hypervisor, catalogue, SystemClock(), "me")
    await reconciler.sync_all()
    (row,) = await catalogue.snapshots(vm.uuid)
    assert row.label == "keep-me"
    assert row.libvirt_name == made.snapshot.libvirt_name


async def test_rename_reaches_libvirts_description_through_redefine(
    hypervisor: LibvirtHypervisor, service: SnapshotService, catalogue: TortoiseCatalogue
) -> None:
    made = await service.create_snapshot("web-01", "before", actor=ALICE, description="pg 15")
    await service.rename_snapshot("web-01", "before", "after", actor=ALICE)
    vm = await hypervisor.get_vm("web-01")
    [hs] = await hypervisor.list_snapshots(vm)
    assert hs.description.startswith("snapbot label: after")
    assert "pg 15" in hs.description
    assert hs.is_current  # REDEFINE kept it the current snapshot: revert evidence relies on it
    await catalogue.remove_snapshot(vm.uuid, made.snapshot.libvirt_name)
    await Reconciler(hypervisor, catalogue, SystemClock(), "me").sync_all()
    [row] = await catalogue.snapshots(vm.uuid)
    assert row.label == "after"


async def test_host_uuid_comes_from_the_hosts_capabilities(
    hypervisor: LibvirtHypervisor,
) -> None:
    host = await hypervisor.host_uuid()
    assert len(host) == 36
    assert host.count("-") == 4


async def test_a_hung_libvirt_call_passes_its_deadline_and_asks_libvirt_to_abort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.adapters.libvirt import connection as connection_module

    monkeypatch.setattr(connection_module, "ABORT_GRACE", 0.2)
    conn = LibvirtConnection("test:///default", workers=2, mutation_deadline=0.3)
    release = threading.Event()
    aborted: list[bool] = []

    def hangs(c: object) -> int:
        release.wait(10)  # a libvirt call that does not come back (a stuck QEMU job)
        return 1

    def abort(c: object) -> None:
        aborted.append(True)

    started = time.monotonic()
    with pytest.raises(HypervisorTimeout) as info:
        await conn.run(hangs, mutating=True, vm="web-01", abort=abort)
    assert time.monotonic() - started < 3
    assert aborted == [True]
    assert "asked libvirt to abort" in info.value.detail
    # the connection still serves other calls while the hung thread waits
    assert await conn.run(lambda c: c.getLibVersion(), mutating=False) > 0
    release.set()
    await conn.close()


async def test_an_aborted_call_that_comes_back_in_the_grace_returns_normally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.adapters.libvirt import connection as connection_module

    monkeypatch.setattr(connection_module, "ABORT_GRACE", 2.0)
    conn = LibvirtConnection("test:///default", workers=2, mutation_deadline=0.2)
    release = threading.Event()

    def hangs(c: object) -> int:
        release.wait(10)
        return 7

    assert await conn.run(hangs, mutating=True, abort=lambda c: release.set()) == 7
    await conn.close()


async def test_a_name_no_libvirt_name_can_be_is_simply_not_found(
    hypervisor: LibvirtHypervisor,
) -> None:
    with pytest.raises(VmNotFound):
        await hypervisor.get_vm("web-\udc80")  # a lone surrogate from a forged payload
