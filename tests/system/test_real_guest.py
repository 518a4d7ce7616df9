"""The engine on a real QEMU guest (TCG) under the tests' own libvirtd.

The guest counts every second, in memory and in the first bytes of its disk, and prints both
with a boot id. After a restore of a running snapshot the same boot goes on counting from the
snapshot's value (memory came back) and its disk image, read on the host rather than through
the guest's page cache (which is part of the restored memory), holds the matching value (disk
came back).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import libvirt
import pytest

from bot import messages
from core.domain.operation import Stage
from core.domain.snapshot import CapturedState, Origin
from core.domain.vm import VmState
from core.errors import InsufficientSpace, InvalidLabel, SnapshotNotFound, VmBusy, VmNotFound
from tests.conftest import ALICE, BOB
from tests.system.conftest import Guest, Guests, RealCore
from tests.system.guest.guest import (
    CounterLine,
    read_counter_lines,
    read_disk_counter,
    wait_for_counter,
    wait_for_restored_count,
)

pytestmark = pytest.mark.system


async def counter_after(guest: Guest, offset: int, minimum: int = 0) -> CounterLine:
    """The first counter line written after ``offset`` whose memory counter is >= minimum."""
    return await asyncio.to_thread(
        wait_for_counter,
        guest.serial_log,
        after_offset=offset,
        timeout=60.0,
        predicate=lambda line: line.mem >= minimum,
    )


async def latest(guest: Guest) -> CounterLine:
    lines = await asyncio.to_thread(read_counter_lines, guest.serial_log)
    return lines[-1]


async def test_restore_brings_back_memory_and_disk(
    real: RealCore, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await counter_after(guest, 0, minimum=2)
    before = await latest(guest)
    created = await real.service.create_snapshot(guest.name, "before-upgrade", actor=ALICE)
    at_snapshot = await latest(guest)
    snap = created.snapshot
    assert snap.has_memory
    assert snap.captured_state is CapturedState.RUNNING
    assert created.vm_state is VmState.RUNNING
    assert snap.memory_bytes is not None
    assert snap.memory_bytes > 0
    # the guest resumed by itself and keeps counting
    moved_on = await counter_after(guest, guest.log_size(), minimum=at_snapshot.mem + 3)
    assert moved_on.boot == before.boot
    # The image itself has moved on too: a restore that brought back only the memory would
    # leave at least this value on the disk.
    disk_before_restore = await asyncio.to_thread(read_disk_counter, guest.disk)
    assert disk_before_restore >= moved_on.mem

    stages: list[Stage] = []
    at_start: dict[str, int] = {}

    async def progress(stage: Stage) -> None:
        stages.append(stage)
        if stage is Stage.STARTING:
            # The revert is done and the guest not yet resumed: nothing has written to the disk
            # since, and every line from here on comes from the restored guest.
            at_start["offset"] = guest.log_size()
            at_start["state"] = libvirt_conn.lookupByName(guest.name).state()[0]
            at_start["disk"] = await asyncio.to_thread(read_disk_counter, guest.disk)

    result = await real.service.restore(guest.name, "before-upgrade", actor=BOB, progress=progress)
    assert result.vm_state is VmState.RUNNING
    assert stages == [
        Stage.CHECKING,
        Stage.SAFETY_SNAPSHOT,
        Stage.STOPPING,
        Stage.REPLACING_DISK_AND_MEMORY,
        Stage.STARTING,
    ]
    back = await counter_after(guest, at_start["offset"])
    assert back.boot == before.boot, "a restored memory state continues the same boot"
    assert back.mem <= at_snapshot.mem + 1 < moved_on.mem, "the memory counter went back"
    # The disk, read from the image on the host while the restored guest was still paused: the
    # value its memory had last written (it writes, then prints, then sleeps; the snapshot may
    # fall between any two of those steps).
    assert at_start["state"] == libvirt.VIR_DOMAIN_PAUSED, "the host read needs a paused guest"
    assert at_start["disk"] in (back.mem - 1, back.mem), (
        f"the image holds {at_start['disk']} after the restore: the disk did not go back with "
        f"the memory (counter {back.mem}, {disk_before_restore} before the restore)"
    )

    # the safety snapshot holds the state from just before the restore
    assert result.safety is not None
    assert result.safety.origin is Origin.SAFETY
    names = {s.libvirt_name for s in await real.hv.list_snapshots(await real.hv.get_vm(guest.name))}
    assert result.safety.libvirt_name in names
    offset = guest.log_size()
    await real.service.restore(guest.name, result.safety.label, actor=BOB, safety_snapshot=False)
    undone = await counter_after(guest, offset)
    assert undone.mem >= moved_on.mem, "restoring the safety snapshot undoes the restore"


async def test_restore_of_shut_off_snapshot_boots_fresh_from_its_disk(
    real: RealCore, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await counter_after(guest, 0, minimum=3)
    vm = await real.hv.get_vm(guest.name)
    await real.hv.stop(vm)
    cold_disk = (await latest(guest)).mem
    created = await real.service.create_snapshot(guest.name, "cold", actor=ALICE)
    assert not created.snapshot.has_memory
    assert created.snapshot.captured_state is CapturedState.SHUT_OFF
    await real.hv.start(vm)
    first = await counter_after(guest, guest.log_size(), minimum=cold_disk + 3)

    result = await real.service.restore(guest.name, "cold", actor=ALICE)
    assert result.vm_state is VmState.SHUT_OFF, "a snapshot taken shut off comes back shut off"
    offset = guest.log_size()
    await real.hv.start(vm)
    booted = await counter_after(guest, offset)
    assert booted.boot != first.boot
    assert booted.disk == cold_disk, "the disk is the one captured while shut off"


async def test_rename_keeps_restore_working_and_delete_removes(
    real: RealCore, guest: Guest
) -> None:
    await counter_after(guest, 0, minimum=2)
    await real.service.create_snapshot(guest.name, "first-name", actor=ALICE)
    mark = (await latest(guest)).mem
    await real.service.rename_snapshot(guest.name, "first-name", "second-name", actor=ALICE)
    await counter_after(guest, guest.log_size(), minimum=mark + 3)
    booted = (await latest(guest)).boot
    offset = guest.log_size()
    await real.service.restore(guest.name, "second-name", actor=ALICE, safety_snapshot=False)
    back = await asyncio.to_thread(
        wait_for_restored_count, guest.serial_log, after_offset=offset, at_most=mark + 2
    )
    assert back.boot == booted, "the restored memory continues the same boot"

    vm = await real.hv.get_vm(guest.name)
    deleted = await real.service.delete_snapshot(guest.name, "second-name", actor=ALICE)
    assert not deleted.already_gone
    assert await real.hv.list_snapshots(vm) == []
    with pytest.raises(SnapshotNotFound):
        await real.service.restore(guest.name, "second-name", actor=ALICE)


async def test_busy_vm_is_refused_while_restoring(real: RealCore, guest: Guest) -> None:
    await real.service.create_snapshot(guest.name, "base", actor=ALICE)
    started = asyncio.Event()

    async def progress(stage: Stage) -> None:
        if stage is Stage.STOPPING:
            started.set()

    restore = asyncio.create_task(
        real.service.restore(guest.name, "base", actor=ALICE, progress=progress)
    )
    await asyncio.wait_for(started.wait(), 60)
    with pytest.raises(VmBusy) as info:
        await real.service.create_snapshot(guest.name, "during", actor=BOB)
    assert "busy: restore by U_ALICE" in messages.error_text(info.value)
    result = await restore
    assert result.vm_state is VmState.RUNNING


async def test_short_space_is_refused_and_vm_keeps_running(
    real: RealCore, guests: Guests, small_fs: Path
) -> None:
    guest = await asyncio.to_thread(guests, small_fs)
    with pytest.raises(InsufficientSpace) as info:
        await real.service.create_snapshot(guest.name, "too-big", actor=ALICE)
    assert info.value.path == str(small_fs)
    assert info.value.available < info.value.needed
    vm = await real.hv.get_vm(guest.name)
    assert await real.hv.state(vm) is VmState.RUNNING
    assert await real.hv.list_snapshots(vm) == []


async def test_bad_and_unknown_names_are_answered(real: RealCore, guest: Guest) -> None:
    with pytest.raises(InvalidLabel):
        await real.service.create_snapshot(guest.name, "../../etc", actor=ALICE)
    with pytest.raises(VmNotFound) as vm_info:
        await real.service.create_snapshot(guest.name[:-1], "x", actor=ALICE)
    assert guest.name in vm_info.value.suggestions
    await real.service.create_snapshot(guest.name, "before-upgrade", actor=ALICE)
    with pytest.raises(SnapshotNotFound) as snap_info:
        await real.service.restore(guest.name, "before-upgrde", actor=ALICE)
    assert snap_info.value.suggestions[0] == "before-upgrade"
    assert await real.hv.list_snapshots(await real.hv.get_vm(guest.name)) != []
