from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.domain.planning import check_restore_support, plan_snapshot
from core.domain.snapshot import CapturedState, HypervisorSnapshot
from core.domain.vm import Disk, DiskFormat, StoragePlace, Vm, VmFacts, VmState
from core.errors import InsufficientSpace, SpaceUnknown, Unsupported

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


def place(free: int | None, *disks: str, where: str = "/vm") -> list[StoragePlace]:
    return [StoragePlace(where, disks or ("vda",), free, None if free is not None else "network")]


def test_running_vm_gets_memory_and_needs_ram_plus_margin() -> None:
    plan = plan_snapshot(facts(), place(10_000 * MIB))
    assert plan.with_memory
    assert plan.needed_bytes > 256 * MIB


def test_short_space_is_refused_with_numbers() -> None:
    with pytest.raises(InsufficientSpace) as info:
        plan_snapshot(facts(), place(100 * MIB))
    assert info.value.available == 100 * MIB
    assert info.value.needed > 256 * MIB


def test_shut_off_vm_needs_little_space() -> None:
    plan = plan_snapshot(facts(VmState.SHUT_OFF), place(100 * MIB))
    assert not plan.with_memory


QCOW_B = Disk("vdb", "/data/disk.qcow2", DiskFormat.QCOW2, "qcow2", False)
LVM = Disk("vdc", "/dev/vg/lv", DiskFormat.QCOW2, "qcow2", False, "block")


def test_every_place_a_snapshot_writes_is_checked_not_just_the_first_disk() -> None:
    # vda (memory goes there) has room; the second disk's filesystem is full
    places = [
        StoragePlace("/vm", ("vda",), 10_000 * MIB),
        StoragePlace("/data", ("vdb",), 10 * MIB),
    ]
    with pytest.raises(InsufficientSpace) as info:
        plan_snapshot(facts(disks=(QCOW, QCOW_B)), places)
    assert info.value.path == "/data"
    assert info.value.needed == 64 * MIB  # no memory there, only the disk's own growth


def test_memory_goes_to_the_first_disk_place_only() -> None:
    places = [
        StoragePlace("/vm", ("vda",), 200 * MIB),  # less than the 256 MiB of RAM
        StoragePlace("/data", ("vdb",), 10_000 * MIB),
    ]
    with pytest.raises(InsufficientSpace) as info:
        plan_snapshot(facts(disks=(QCOW, QCOW_B)), places)
    assert info.value.path == "/vm"
    assert info.value.needed > 256 * MIB


def test_disks_sharing_a_filesystem_add_up() -> None:
    shared = [StoragePlace("/vm", ("vda", "vdb", "vdc"), 150 * MIB)]
    with pytest.raises(InsufficientSpace):
        plan_snapshot(facts(VmState.SHUT_OFF, disks=(QCOW, QCOW_B, LVM)), shared)
    plan = plan_snapshot(facts(VmState.SHUT_OFF, disks=(QCOW, QCOW_B, LVM)), place(200 * MIB))
    assert plan.needed_bytes == 64 * MIB


def test_unknown_space_is_said_and_refused_unless_the_user_skips_the_check() -> None:
    places = [
        StoragePlace("/vm", ("vda",), 10_000 * MIB),
        StoragePlace(
            "network disk vdb", ("vdb",), None, "a network disk's free space is not visible"
        ),
    ]
    with pytest.raises(SpaceUnknown) as info:
        plan_snapshot(facts(disks=(QCOW, QCOW_B)), places)
    assert info.value.places == (
        ("network disk vdb", "a network disk's free space is not visible"),
    )
    plan = plan_snapshot(facts(disks=(QCOW, QCOW_B)), places, check_space=False)
    assert plan.with_memory


def test_skipping_the_check_skips_a_short_place_too() -> None:
    assert plan_snapshot(facts(), place(1 * MIB), check_space=False).with_memory


def test_raw_disk_refused_with_conversion_advice() -> None:
    with pytest.raises(Unsupported) as info:
        plan_snapshot(facts(disks=(QCOW, RAW)), [])
    assert "vdb is raw" in info.value.reason
    assert "qemu-img convert" in info.value.way_out


def test_cdrom_is_ignored() -> None:
    assert plan_snapshot(facts(disks=(QCOW, CDROM)), []).with_memory


def test_uefi_running_refused_shut_off_depends_on_version() -> None:
    with pytest.raises(Unsupported, match="UEFI"):
        plan_snapshot(facts(pflash=True), [])
    with pytest.raises(Unsupported) as old:
        plan_snapshot(facts(VmState.SHUT_OFF, pflash=True, version=(9, 0, 0)), [])
    assert "9.3" in old.value.way_out
    assert not plan_snapshot(
        facts(VmState.SHUT_OFF, pflash=True, version=(9, 3, 0)), []
    ).with_memory


def test_external_snapshots_block_mixing() -> None:
    with pytest.raises(Unsupported, match="external"):
        plan_snapshot(facts(external=True), [])


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
