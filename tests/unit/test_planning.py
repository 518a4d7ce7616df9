from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.domain.planning import check_restore_support, plan_snapshot
from core.domain.snapshot import CapturedState, HypervisorSnapshot
from core.domain.vm import Disk, DiskFormat, FreeSpace, Vm, VmFacts, VmState
from core.errors import InsufficientSpace, Unsupported

MIB = 2**20
QCOW = Disk("vda", "/vm/disk.qcow2", DiskFormat.QCOW2, "qcow2", False)
RAW = Disk("vdb", "/vm/data.img", DiskFormat.RAW, "raw", False)
CDROM = Disk("sda", "/iso/install.iso", DiskFormat.RAW, "raw", True)


def facts(
    state: VmState = VmState.RUNNING,
    disks: tuple[Disk, ...] = (QCOW,),
    pflash: bool = False,
    version: tuple[int, int, int] = (9, 0, 0),
    external: bool = False,
    checkpoints: bool = False,
) -> VmFacts:
    return VmFacts(
        Vm("u", "web-01", state, 256 * MIB), disks, pflash, external, checkpoints, version
    )


def test_running_vm_gets_memory_and_needs_ram_plus_margin() -> None:
    plan = plan_snapshot(facts(), FreeSpace("/vm", 10_000 * MIB))
    assert plan.with_memory
    assert plan.needed_bytes > 256 * MIB


def test_short_space_is_refused_with_numbers() -> None:
    with pytest.raises(InsufficientSpace) as info:
        plan_snapshot(facts(), FreeSpace("/vm", 100 * MIB))
    assert info.value.available == 100 * MIB
    assert info.value.needed > 256 * MIB


def test_shut_off_vm_needs_little_space() -> None:
    plan = plan_snapshot(facts(VmState.SHUT_OFF), FreeSpace("/vm", 100 * MIB))
    assert not plan.with_memory


def test_unknown_space_does_not_block() -> None:
    assert plan_snapshot(facts(), None).space_path is None


def test_raw_disk_refused_with_conversion_advice() -> None:
    with pytest.raises(Unsupported) as info:
        plan_snapshot(facts(disks=(QCOW, RAW)), None)
    assert "vdb is raw" in info.value.reason
    assert "qemu-img convert" in info.value.way_out


def test_cdrom_is_ignored() -> None:
    assert plan_snapshot(facts(disks=(QCOW, CDROM)), None).with_memory


def test_uefi_running_refused_shut_off_depends_on_version() -> None:
    with pytest.raises(Unsupported, match="UEFI"):
        plan_snapshot(facts(pflash=True), None)
    with pytest.raises(Unsupported) as old:
        plan_snapshot(facts(VmState.SHUT_OFF, pflash=True, version=(9, 0, 0)), None)
    assert "9.3" in old.value.way_out
    assert not plan_snapshot(
        facts(VmState.SHUT_OFF, pflash=True, version=(9, 3, 0)), None
    ).with_memory


def test_external_snapshots_block_mixing() -> None:
    with pytest.raises(Unsupported, match="external"):
        plan_snapshot(facts(external=True), None)


def _snap(external: bool = False) -> HypervisorSnapshot:
    return HypervisorSnapshot(
        "sb-x", datetime.now(UTC), CapturedState.RUNNING, True, "", None, True, external
    )


def test_restore_refused_with_checkpoints_before_anything_stops() -> None:
    with pytest.raises(Unsupported, match="checkpoints"):
        check_restore_support(facts(checkpoints=True), _snap())
    with pytest.raises(Unsupported, match="external"):
        check_restore_support(facts(), _snap(external=True))
    check_restore_support(facts(), _snap())
