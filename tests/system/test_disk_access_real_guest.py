"""``LibvirtDiskAccess`` on the real counter guest under the tests' own libvirtd.

The guest writes its counter into the first 16 bytes of its disk every second (``init.sh``), so
the disk's content says *when* it was read: a point-in-time view keeps one value while the image
on the host moves on, a snapshot's view holds the value of the snapshot's instant, and a VM
restored from a view boots counting on from the value the view held.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from core.adapters.libvirt.disk_access import LibvirtDiskAccess
from core.adapters.libvirt.errors import DiskAccessFailed
from core.domain.backups import CHUNK_SIZE, Consistency, DiskReader, DiskWriter
from core.domain.vm import Vm, VmState
from core.errors import Conflict, InvalidInput
from tests.system import daemon
from tests.system.conftest import (
    SESSION_PREFIX,
    Guest,
    Guests,
    remove_guest,
)
from tests.system.guest.guest import (
    read_counter_lines,
    read_disk_counter,
    wait_for_counter,
    wait_for_restored_count,
)

pytestmark = pytest.mark.system

MIB = 1024 * 1024


def vm_of(conn: libvirt.virConnect, name: str) -> Vm:
    dom = conn.lookupByName(name)
    state = {
        libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
        libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
        libvirt.VIR_DOMAIN_SHUTOFF: VmState.SHUT_OFF,
    }.get(dom.state()[0], VmState.OTHER)
    return Vm(dom.UUIDString(), name, state, dom.maxMemory() * 1024)


def counter_in(data: bytes) -> int:
    digits = data[:16].split(b"\n", 1)[0]
    return int(digits) if digits.isdigit() else 0


def temp_dirs(root: Path) -> set[str]:
    return set(glob.glob(str(root / "snapbot-nbd-*")))


def read_all(reader: DiskReader) -> tuple[dict[int, bytes], int]:
    """Every chunk that may hold data, as the backup store reads it; and the bytes read."""
    chunks = {}
    for offset in range(0, reader.size, CHUNK_SIZE):
        length = min(CHUNK_SIZE, reader.size - offset)
        if not reader.reads_as_zeros(offset, length):
            chunks[offset] = reader.read(offset, length)
    return chunks, sum(len(c) for c in chunks.values())


def write_all(writer: DiskWriter, chunks: dict[int, bytes]) -> None:
    for offset in range(0, writer.size, CHUNK_SIZE):
        if offset in chunks:
            writer.write(offset, chunks[offset])
        else:
            writer.zero(offset, min(CHUNK_SIZE, writer.size - offset))
    writer.flush()


async def host_counter(guest: Guest) -> int:
    return await asyncio.to_thread(read_disk_counter, guest.disk)


async def wait_until(predicate: Callable[[], bool], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def wait_host_counter_above(guest: Guest, value: int) -> int:
    deadline = time.monotonic() + 60
    while (now := await host_counter(guest)) <= value:
        assert time.monotonic() < deadline, f"the guest's disk counter stayed at {now}"
        await asyncio.sleep(0.3)
    return now


async def paused_snapshot(conn: libvirt.virConnect, guest: Guest, name: str) -> int:
    """An internal snapshot taken while the guest is paused: its disk counter is then exactly
    the one the image holds at that instant."""
    dom = conn.lookupByName(guest.name)
    await asyncio.to_thread(wait_for_counter, guest.serial_log, after_offset=0, timeout=60.0)
    await asyncio.to_thread(dom.suspend)
    try:
        value = await host_counter(guest)
        xml = f"<domainsnapshot><name>{name}</name></domainsnapshot>"
        await asyncio.to_thread(dom.snapshotCreateXML, xml, 0)
    finally:
        await asyncio.to_thread(dom.resume)
    return value


async def test_backup_view_of_a_running_guest_is_point_in_time_and_leaves_nothing(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect, temp_root: Path
) -> None:
    await wait_host_counter_above(guest, 2)
    dom = libvirt_conn.lookupByName(guest.name)
    before = temp_dirs(temp_root)
    started = time.monotonic()
    async with access.backup_view(vm_of(libvirt_conn, guest.name)) as export:
        setup = time.monotonic() - started
        assert set(export.disks) == {"vda"}
        assert export.consistency is Consistency.CRASH_CONSISTENT
        assert "no guest agent" in export.note
        assert f"<name>{guest.name}</name>" in export.domain_xml
        assert dom.jobStats()["operation"] == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP
        (view_dir,) = temp_dirs(temp_root) - before
        # QEMU (another user) creates the socket and scratch files there; nobody else may list
        # or remove them.
        assert os.stat(view_dir).st_mode & 0o7777 == 0o1733
        reader = export.disks["vda"]
        assert reader.size == 64 * MIB
        first = counter_in(await asyncio.to_thread(reader.read, 0, 16))
        assert first > 0
        # The guest goes on writing; the view does not move.
        host_later = await wait_host_counter_above(guest, first + 2)
        second = counter_in(await asyncio.to_thread(reader.read, 0, 16))
        assert second == first < host_later
        # The store's way: unallocated chunks are never read.
        read_started = time.monotonic()
        chunks, read_bytes = await asyncio.to_thread(read_all, reader)
        seconds = time.monotonic() - read_started
        assert 0 in chunks
        assert counter_in(chunks[0]) == first
        assert len(chunks) < 64 * MIB // CHUNK_SIZE, "holes were read as data"
        # Every byte, to measure NBD throughput rather than the zero map.
        raw_started = time.monotonic()
        for offset in range(0, reader.size, CHUNK_SIZE):
            await asyncio.to_thread(reader.read, offset, CHUNK_SIZE)
        raw_seconds = time.monotonic() - raw_started
        teardown_started = time.monotonic()
    teardown = time.monotonic() - teardown_started
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE
    assert dom.listAllCheckpoints() == []
    assert temp_dirs(temp_root) == before
    assert dom.isActive()
    print(
        f"\nbackup job: set up {setup * 1000:.0f} ms, torn down {teardown * 1000:.0f} ms; read "
        f"{read_bytes / MIB:.0f}"
        f" MiB of data in {seconds:.2f} s; all 64 MiB read at "
        f"{64 / raw_seconds:.0f} MiB/s"
    )


async def test_backup_view_of_a_paused_guest_says_why_it_is_not_frozen(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await wait_host_counter_above(guest, 1)
    dom = libvirt_conn.lookupByName(guest.name)
    dom.suspend()
    on_disk = await host_counter(guest)
    async with access.backup_view(vm_of(libvirt_conn, guest.name)) as export:
        assert export.consistency is Consistency.CRASH_CONSISTENT
        assert "paused" in export.note
        data = await asyncio.to_thread(export.disks["vda"].read, 0, 16)
        assert counter_in(data) == on_disk
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE


async def test_a_view_cancelled_twice_still_ends_its_job_and_removes_its_files(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect, temp_root: Path
) -> None:
    await wait_host_counter_above(guest, 1)
    dom = libvirt_conn.lookupByName(guest.name)
    entered = asyncio.Event()

    async def hold() -> None:
        async with access.backup_view(vm_of(libvirt_conn, guest.name)):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    await asyncio.sleep(0)  # one turn: the task enters its clean-up
    # A second cancel lands while the view cleans up (a shutdown that gives up waiting).
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(
        lambda: dom.jobStats()["type"] == libvirt.VIR_DOMAIN_JOB_NONE and not temp_dirs(temp_root),
        within=30,
    )


async def test_shut_off_guest_is_read_from_its_image_and_cannot_start_meanwhile(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect, temp_root: Path
) -> None:
    await wait_host_counter_above(guest, 1)
    dom = libvirt_conn.lookupByName(guest.name)
    dom.destroy()
    on_disk = await host_counter(guest)
    # Data in most of the disk, for a throughput figure of real reads.
    await asyncio.to_thread(
        subprocess.run,
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 4M 56M", str(guest.disk)],
        check=True,
        capture_output=True,
    )
    before = temp_dirs(temp_root)
    async with access.backup_view(vm_of(libvirt_conn, guest.name)) as export:
        assert export.consistency is Consistency.SHUT_OFF
        reader = export.disks["vda"]
        assert counter_in(await asyncio.to_thread(reader.read, 0, 16)) == on_disk
        with pytest.raises(libvirt.libvirtError) as refused:
            dom.create()
        # libvirt passes QEMU's reason on, or only "qemu unexpectedly closed the monitor"
        # with the reason in the VM's QEMU log.
        qemu_log = daemon.BASE / "cache" / "libvirt" / "qemu" / "log" / f"{guest.name}.log"
        reason = str(refused.value) + (qemu_log.read_text() if qemu_log.exists() else "")
        assert 'Failed to get "write" lock' in reason
        started = time.monotonic()
        chunks, read_bytes = await asyncio.to_thread(read_all, reader)
        seconds = time.monotonic() - started
        assert chunks[8 * MIB] == b"\x5a" * CHUNK_SIZE
        assert not dom.isActive()
    assert temp_dirs(temp_root) == before
    print(f"\nqemu-nbd view: {read_bytes / MIB:.0f} MiB at {read_bytes / MIB / seconds:.0f} MiB/s")
    # The lock went with the view.
    dom.create()
    assert dom.isActive()
    # The same data read through a running VM's backup job, for the throughput figure.
    async with access.backup_view(vm_of(libvirt_conn, guest.name)) as export:
        started = time.monotonic()
        chunks, job_bytes = await asyncio.to_thread(read_all, export.disks["vda"])
        job_seconds = time.monotonic() - started
        assert chunks[8 * MIB] == b"\x5a" * CHUNK_SIZE
    print(
        f"backup job view: {job_bytes / MIB:.0f} MiB at {job_bytes / MIB / job_seconds:.0f} MiB/s"
    )


async def test_snapshot_view_holds_the_snapshots_disk(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    at_snapshot = await paused_snapshot(libvirt_conn, guest, "sb-view")
    await wait_host_counter_above(guest, at_snapshot + 2)
    async with access.snapshot_view(vm_of(libvirt_conn, guest.name), "sb-view") as export:
        assert export.consistency is Consistency.SNAPSHOT
        assert f"<name>{guest.name}</name>" in export.domain_xml
        data = await asyncio.to_thread(export.disks["vda"].read, 0, 16)
        assert counter_in(data) == at_snapshot
    assert libvirt_conn.lookupByName(guest.name).isActive()


async def test_restore_in_place_writes_the_image_and_keeps_its_snapshots(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    at_snapshot = await paused_snapshot(libvirt_conn, guest, "sb-keep")
    dom = libvirt_conn.lookupByName(guest.name)
    running = vm_of(libvirt_conn, guest.name)
    with pytest.raises(Conflict, match="is running"):
        async with access.restore_in_place(running, {"vda": 64 * MIB}):
            pass
    dom.destroy()
    vm = vm_of(libvirt_conn, guest.name)
    with pytest.raises(InvalidInput, match="no writable disk vdz"):
        async with access.restore_in_place(vm, {"vda": 64 * MIB, "vdz": MIB}):
            pass
    with pytest.raises(DiskAccessFailed, match="does not shrink"):
        async with access.restore_in_place(vm, {"vda": 32 * MIB}):
            pass
    marker = b"000000000424242\n"
    # A restore point of a bigger disk grows the image first.
    async with access.restore_in_place(vm, {"vda": 72 * MIB}) as target:
        assert target.disk_paths == {"vda": str(guest.disk)}
        writer = target.disks["vda"]
        assert writer.size == 72 * MIB

        def write() -> None:
            writer.write(0, marker)
            writer.write(5 * MIB, b"\x77" * MIB)
            writer.flush()

        await asyncio.to_thread(write)
    assert await host_counter(guest) == 424242
    info = await asyncio.to_thread(
        subprocess.run,
        ["qemu-img", "info", "-U", "--output=json", str(guest.disk)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(info.stdout)["virtual-size"] == 72 * MIB
    check = await asyncio.to_thread(
        subprocess.run,
        ["qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -P 0x77 5M 1M", str(guest.disk)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Pattern verification failed" not in check.stdout + check.stderr
    # The internal snapshot taken before the restore still reverts: memory and disk come back.
    offset = guest.log_size()
    await asyncio.to_thread(
        dom.revertToSnapshot,
        dom.snapshotLookupByName("sb-keep"),
        libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING,
    )
    await asyncio.to_thread(
        wait_for_restored_count, guest.serial_log, after_offset=offset, at_most=at_snapshot + 1
    )
    assert await host_counter(guest) < 424242


async def restore_copy(
    access: LibvirtDiskAccess,
    domain_xml: str,
    chunks: dict[int, bytes],
    *,
    new_name: str | None,
) -> tuple[str, str, dict[str, str]]:
    async with access.restore_as_new(
        domain_xml, {"vda": 64 * MIB}, new_name=new_name, blobs={}
    ) as target:
        await asyncio.to_thread(write_all, target.disks["vda"], chunks)
        return target.vm_name, target.vm_uuid, dict(target.disk_paths)


async def test_restore_as_new_defines_a_copy_that_boots_beside_the_original(
    access: LibvirtDiskAccess, guests: Guests, libvirt_conn: libvirt.virConnect
) -> None:
    guest = guests()
    await wait_host_counter_above(guest, 2)
    async with access.backup_view(vm_of(libvirt_conn, guest.name)) as export:
        chunks, _ = await asyncio.to_thread(read_all, export.disks["vda"])
        domain_xml = export.domain_xml
    in_view = counter_in(chunks[0])
    copy_name = f"{SESSION_PREFIX}{uuid.uuid4().hex[:6]}"
    copy_disk = guest.workdir / f"{copy_name}-vda.qcow2"

    # A restore that fails half-way leaves no file and defines nothing.
    async def broken_restore() -> None:
        async with access.restore_as_new(
            domain_xml, {"vda": 64 * MIB}, new_name=copy_name, blobs={}
        ):
            assert copy_disk.exists()
            raise RuntimeError("store broke")

    with pytest.raises(RuntimeError, match="store broke"):
        await broken_restore()
    assert not copy_disk.exists()
    assert copy_name not in [d.name() for d in libvirt_conn.listAllDomains()]

    try:
        name, vm_uuid, paths = await restore_copy(access, domain_xml, chunks, new_name=copy_name)
        assert paths == {"vda": str(copy_disk)}
        copy = libvirt_conn.lookupByName(copy_name)
        assert name == copy_name
        assert copy.UUIDString() == vm_uuid != libvirt_conn.lookupByName(guest.name).UUIDString()
        assert not copy.isActive()
        copy_log = guest.workdir / f"{copy_name}-serial.log"
        original_lines = len(read_counter_lines(guest.serial_log))
        copy.create()
        first = await asyncio.to_thread(wait_for_counter, copy_log, after_offset=0, timeout=60.0)
        # It booted from the restored disk: counting on from the view's value.
        assert first.disk == in_view
        # The original runs on, and its log has none of the copy's lines.
        original = libvirt_conn.lookupByName(guest.name)
        assert original.isActive()
        await wait_until(lambda: len(read_counter_lines(guest.serial_log)) > original_lines + 1)
        assert first.boot not in {line.boot for line in read_counter_lines(guest.serial_log)}
    finally:
        await asyncio.to_thread(remove_guest, copy_name)


async def test_restore_as_the_original_after_it_was_undefined_and_its_disk_deleted(
    access: LibvirtDiskAccess, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await wait_host_counter_above(guest, 2)
    vm = vm_of(libvirt_conn, guest.name)
    async with access.backup_view(vm) as export:
        chunks, _ = await asyncio.to_thread(read_all, export.disks["vda"])
        domain_xml = export.domain_xml
    in_view = counter_in(chunks[0])
    # While the VM exists, restoring "the original" is refused.
    with pytest.raises(Conflict, match="exists already"):
        await restore_copy(access, domain_xml, chunks, new_name=None)
    await asyncio.to_thread(remove_guest, guest.name)
    guest.disk.unlink()

    name, vm_uuid, paths = await restore_copy(access, domain_xml, chunks, new_name=None)
    assert (name, vm_uuid, paths) == (guest.name, vm.uuid, {"vda": str(guest.disk)})
    dom = libvirt_conn.lookupByUUIDString(vm.uuid)
    assert dom.name() == guest.name
    offset = guest.log_size()
    dom.create()
    first = await asyncio.to_thread(
        wait_for_counter, guest.serial_log, after_offset=offset, timeout=60.0
    )
    assert first.disk == in_view

    # Undefined again with its disk left: the disk is in the way, nothing is defined.
    await asyncio.to_thread(remove_guest, guest.name)
    with pytest.raises(Conflict, match="exists already"):
        await restore_copy(access, domain_xml, chunks, new_name=None)
    assert guest.name not in [d.name() for d in libvirt_conn.listAllDomains()]
    assert guest.disk.exists()
