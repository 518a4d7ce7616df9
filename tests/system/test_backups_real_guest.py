"""Incremental snapshots in the backup store on the real counter guest (issue 9, "Tests (real
guest)"): the wired ``BackupService`` over the tests' own libvirtd, a ``DirectoryBackupStore``
in the test's workdir and ``LibvirtDiskAccess``.

The guest writes known data (``guest_write``: every MiB its own pattern) between backups, and
every check of what a restore gave back reads the image file from the host, never through the
guest: a guest's page cache could show what its disk no longer holds. MiB 0 is the guest's
counter, which moves every second; a restored guest that boots counts on from the value the
restore point holds, which proves it booted from the restored disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.backupstore.chunks import CHUNKS_DIR
from core.catalogue.store import TortoiseCatalogue
from core.domain.backups import CHUNK_SIZE, Consistency, PointRef, TransferFigures
from core.domain.snapshot import Snapshot, SnapshotKind
from core.domain.vm import VmState
from core.services.backups import BackupResult, BackupService
from core.services.facade import Core
from tests.conftest import ALICE
from tests.system.conftest import TEST_URI, Guest, Guests, StoreCore, remove_guest
from tests.system.guest.guest import (
    MIB,
    CounterLine,
    disk_virtual_size,
    expected_pattern,
    guest_write,
    read_counter_lines,
    read_disk_range,
    wait_for_counter,
    wait_for_restored_count,
)

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
DISK = 64 * MIB
# The data region the guest writes: MiB 4-15, three whole 4 MiB chunks, clear of the counter's
# chunk (MiB 0-3).
DATA_AT, DATA_MIB = 4, 12
# Figures printed at the end of the run (pytest -s) for the report.
FIGURES: list[str] = []


@dataclass
class Backups:
    core: Core
    service: BackupService
    store: DirectoryBackupStore
    root: Path
    catalogue: TortoiseCatalogue

    def note(self, what: str, result: BackupResult) -> None:
        FIGURES.append(f"{what}: {describe(result.figures)}, {result.seconds:.2f} s")


def describe(figures: TransferFigures) -> str:
    return (
        f"read {figures.bytes_read / MIB:.1f} MiB, new {figures.bytes_new / MIB:.1f} MiB, "
        f"stored {figures.bytes_stored / 1024:.0f} KiB"
    )


@pytest.fixture
def bk(store_core: StoreCore, catalogue: TortoiseCatalogue) -> Backups:
    assert store_core.core.backups is not None
    return Backups(
        store_core.core, store_core.core.backups, store_core.store, store_core.root, catalogue
    )


@pytest.fixture(scope="module", autouse=True)
def print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\nbackup figures:\n  " + "\n  ".join(FIGURES))


# -- helpers ---------------------------------------------------------------------------------


async def write(guest: Guest, seed: str, at: int = DATA_AT, count: int = DATA_MIB) -> None:
    await asyncio.to_thread(guest_write, guest, at, count, seed)


def disk_after_counter(seed: str | None, size: int = DISK) -> bytes:
    """What MiB 1 to the end of the disk holds when the guest wrote ``seed`` over the data
    region (None: nothing) and nothing else: the counter's MiB is left out, it moves."""
    data = expected_pattern(seed, DATA_AT, DATA_MIB) if seed else bytes(DATA_MIB * MIB)
    return bytes((DATA_AT - 1) * MIB) + data + bytes(size - (DATA_AT + DATA_MIB) * MIB)


async def host_read(disk: Path, offset: int, length: int) -> bytes:
    return await asyncio.to_thread(read_disk_range, disk, offset, length)


async def after_counter(disk: Path) -> bytes:
    size = await asyncio.to_thread(disk_virtual_size, disk)
    return await host_read(disk, MIB, size - MIB)


async def point_image(bk: Backups, snapshot: Snapshot, where: Path) -> bytes:
    """The point's disk as the store holds it (raw), read through the store itself."""
    assert snapshot.point_id is not None
    raw = where / f".point-{snapshot.point_id}.raw"
    try:
        await bk.store.read_disk(PointRef(snapshot.vm_uuid, snapshot.point_id), "vda", raw)
        return await asyncio.to_thread(raw.read_bytes)
    finally:
        raw.unlink(missing_ok=True)


def counter_in(data: bytes) -> int:
    digits = data[:16].split(b"\n", 1)[0]
    return int(digits) if digits.isdigit() else 0


async def last_line(guest_log: Path) -> CounterLine:
    lines = await asyncio.to_thread(read_counter_lines, guest_log)
    assert lines, f"no counter line in {guest_log}"
    return lines[-1]


async def booted_anew(log: Path, offset: int, old_boot: str | None) -> CounterLine:
    """The first line of a boot other than ``old_boot`` after ``offset``; then a second line of
    that boot, so it is counting rather than just started."""
    first = await asyncio.to_thread(
        wait_for_counter,
        log,
        after_offset=offset,
        timeout=60.0,
        predicate=lambda line: line.boot != old_boot,
    )
    await asyncio.to_thread(
        wait_for_counter,
        log,
        after_offset=offset,
        timeout=60.0,
        predicate=lambda line: line.boot == first.boot and line.mem > first.mem,
    )
    return first


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def chunk_file(root: Path, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    return root / CHUNKS_DIR / digest[:4] / digest


def qemu_nbd_on(path: Path) -> list[str]:
    """qemu-nbd processes whose command line names ``path`` (or anything under it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-nbd") and any(str(path).encode() in a for a in argv):
            found.append(f"{proc.name}: {b' '.join(argv).decode(errors='replace')}")
    return found


def job_type(dom: libvirt.virDomain) -> int:
    return int(dom.jobInfo()[0])


# -- 1. the second incremental stores what changed -------------------------------------------


async def test_second_incremental_stores_about_what_the_guest_changed(
    bk: Backups, guest: Guest
) -> None:
    first = await bk.service.create_backup(guest.name, "inc-1", actor=ALICE)
    bk.note("1: first incremental", first)
    assert first.consistency is Consistency.CRASH_CONSISTENT
    assert "no guest agent" in first.note
    assert first.snapshot.kind is SnapshotKind.INCREMENTAL
    assert first.vm_state is VmState.RUNNING
    # The first stores the counter's chunk at least, and nothing of the empty disk.
    assert 0 < first.figures.bytes_new <= CHUNK_SIZE

    await write(guest, "a")
    second = await bk.service.create_backup(guest.name, "inc-2", actor=ALICE)
    bk.note("1: second incremental after 12 MiB written", second)

    n = DATA_MIB * MIB
    assert n <= second.figures.bytes_new <= n + 8 * MIB, describe(second.figures)
    assert second.figures.bytes_new < DISK // 2
    assert second.consistency is Consistency.CRASH_CONSISTENT
    # The pattern compresses, and a chunk's header is small: what it took is below what it is.
    assert 0 < second.figures.bytes_stored < second.figures.bytes_new
    listing = await bk.core.snapshots.list_snapshots(guest.name)
    kinds = {s.label: s.kind for vm in listing for s in vm.snapshots}
    assert kinds == {"inc-1": SnapshotKind.INCREMENTAL, "inc-2": SnapshotKind.INCREMENTAL}


# -- 2. each restore point gives back exactly its content ------------------------------------


async def restore_and_check(
    bk: Backups, guest: Guest, snapshot: Snapshot, seed: str | None, *, safety: bool
) -> CounterLine:
    """Restore ``snapshot`` in place; check the disk from the host against ``seed`` and the
    point itself, and that the VM runs a new boot that counts on from the point's counter."""
    old_boot = (await last_line(guest.serial_log)).boot
    point = await point_image(bk, snapshot, guest.workdir)
    offset = guest.log_size()
    result = await bk.service.restore_backup(
        guest.name, snapshot.label, actor=ALICE, safety_snapshot=safety
    )
    assert result.vm_state is VmState.RUNNING
    assert (result.safety is not None) is safety
    assert result.bytes_written > 0
    booted = await booted_anew(guest.serial_log, offset, old_boot)
    assert booted.disk == counter_in(point)
    # The counter's MiB moves on once the guest runs; everything after it is the point's.
    on_host = await after_counter(guest.disk)
    assert on_host == point[MIB:]
    assert on_host == disk_after_counter(seed)
    return booted


async def test_each_restore_point_gives_back_exactly_its_disk(
    bk: Backups, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await write(guest, "a")
    one = (await bk.service.create_backup(guest.name, "pt-a", actor=ALICE)).snapshot
    await write(guest, "b")
    two = (await bk.service.create_backup(guest.name, "pt-b", actor=ALICE)).snapshot
    assert await host_read(guest.disk, DATA_AT * MIB, DATA_MIB * MIB) == expected_pattern(
        "b", DATA_AT, DATA_MIB
    )

    started = time.monotonic()
    await restore_and_check(bk, guest, one, "a", safety=True)
    FIGURES.append(f"2: restore in place with safety snapshot {time.monotonic() - started:.2f} s")
    started = time.monotonic()
    await restore_and_check(bk, guest, two, "b", safety=False)
    FIGURES.append(f"2: restore in place {time.monotonic() - started:.2f} s")
    assert libvirt_conn.lookupByName(guest.name).isActive()


# -- 3. internal snapshots still revert -------------------------------------------------------


async def test_internal_snapshot_reverts_after_incrementals_and_an_in_place_restore(
    bk: Backups, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await write(guest, "a")
    full = await bk.core.snapshots.create_snapshot(guest.name, "full-a", actor=ALICE)
    at_full = await last_line(guest.serial_log)
    await write(guest, "b")
    inc = (await bk.service.create_backup(guest.name, "inc-b", actor=ALICE)).snapshot
    await write(guest, "c")
    await bk.service.create_backup(guest.name, "inc-c", actor=ALICE)
    # Restored in place from the store (with its safety snapshot): the image's internal
    # snapshots are still there.
    await restore_and_check(bk, guest, inc, "b", safety=True)
    dom = libvirt_conn.lookupByName(guest.name)
    assert full.snapshot.libvirt_name in dom.snapshotListNames()
    assert dom.listAllCheckpoints() == []

    offset = guest.log_size()
    restored = await bk.core.snapshots.restore(
        guest.name, "full-a", actor=ALICE, safety_snapshot=False
    )
    assert restored.vm_state is VmState.RUNNING
    # Memory came back: the boot of the full snapshot counts on from its value.
    line = await asyncio.to_thread(
        wait_for_restored_count,
        guest.serial_log,
        after_offset=offset,
        at_most=at_full.mem + 1,
    )
    assert line.boot == at_full.boot
    assert await host_read(guest.disk, DATA_AT * MIB, DATA_MIB * MIB) == expected_pattern(
        "a", DATA_AT, DATA_MIB
    )


# -- 4. a deleted VM comes back ---------------------------------------------------------------


async def test_restore_of_an_undefined_vm_whose_disk_was_deleted(
    bk: Backups, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await write(guest, "a")
    original_uuid = libvirt_conn.lookupByName(guest.name).UUIDString()
    backup = await bk.service.create_backup(guest.name, "before-delete", actor=ALICE)
    point = await point_image(bk, backup.snapshot, guest.workdir)
    old_boot = (await last_line(guest.serial_log)).boot
    # virsh undefine --snapshots-metadata, and the disk removed.
    await asyncio.to_thread(remove_guest, guest.name)
    guest.disk.unlink()
    assert guest.name not in [d.name() for d in libvirt_conn.listAllDomains()]

    offset = guest.log_size()
    result = await bk.service.restore_as(guest.name, "before-delete", None, actor=ALICE)
    FIGURES.append(f"4: restore of a deleted VM {result.seconds:.2f} s")

    assert result.created
    assert result.vm_name == guest.name
    assert result.vm_state is VmState.RUNNING
    dom = libvirt_conn.lookupByName(guest.name)
    assert dom.UUIDString() == original_uuid
    assert dom.isActive()
    booted = await booted_anew(guest.serial_log, offset, old_boot)
    assert booted.disk == counter_in(point)
    assert guest.disk.exists()
    assert await after_counter(guest.disk) == point[MIB:] == disk_after_counter("a")


# -- 5. --as: a copy beside the original ------------------------------------------------------


async def test_restore_as_a_copy_runs_beside_the_original(
    bk: Backups, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await write(guest, "a")
    backup = await bk.service.create_backup(guest.name, "for-copy", actor=ALICE)
    point = await point_image(bk, backup.snapshot, guest.workdir)
    copy_name = f"{guest.name}-copy"
    try:
        result = await bk.service.restore_as(guest.name, "for-copy", copy_name, actor=ALICE)
        FIGURES.append(f"5: restore as a copy {result.seconds:.2f} s")
        assert result.created
        assert result.vm_name == copy_name
        assert result.vm_state is VmState.SHUT_OFF
        original = libvirt_conn.lookupByName(guest.name)
        copy = libvirt_conn.lookupByName(copy_name)
        assert copy.UUIDString() != original.UUIDString()
        copy_disks = [
            p for p in guest.workdir.iterdir() if p.name.startswith(copy_name) and "qcow2" in p.name
        ]
        assert len(copy_disks) == 1, copy_disks
        copy_disk = copy_disks[0]
        assert copy_disk != guest.disk
        assert str(copy_disk) in copy.XMLDesc(0)
        assert str(guest.disk) not in copy.XMLDesc(0)
        assert await after_counter(copy_disk) == point[MIB:]

        copy.create()
        copy_logs = [
            p for p in guest.workdir.iterdir() if p.name.startswith(copy_name) and "log" in p.name
        ]
        assert len(copy_logs) == 1, copy_logs
        first = await booted_anew(copy_logs[0], 0, None)
        assert first.disk == counter_in(point)
        # Both count at once, each in its own log.
        assert original.isActive()
        assert copy.isActive()
        offset = guest.log_size()
        own = await asyncio.to_thread(
            wait_for_counter, guest.serial_log, after_offset=offset, timeout=30.0
        )
        assert own.boot != first.boot
        copy_lines = await asyncio.to_thread(read_counter_lines, copy_logs[0])
        assert {line.boot for line in copy_lines} == {first.boot}
    finally:
        await asyncio.to_thread(remove_guest, copy_name)
        for path in guest.workdir.iterdir():
            if path.name.startswith(copy_name):
                path.unlink()


# -- 6. a shut-off VM -------------------------------------------------------------------------


async def test_shut_off_vm_backs_up_and_restores(
    bk: Backups, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await write(guest, "a")
    dom = libvirt_conn.lookupByName(guest.name)
    dom.destroy()
    backup = await bk.service.create_backup(guest.name, "off", actor=ALICE)
    bk.note("6: shut-off VM", backup)
    assert backup.consistency is Consistency.SHUT_OFF
    assert backup.vm_state is VmState.SHUT_OFF
    assert not dom.isActive()
    whole = await host_read(guest.disk, 0, DISK)

    # Running again, the guest overwrites the data; the restore stops it and brings the disk
    # back whole, counter included (nothing ran since), and leaves it shut off as it was.
    offset = guest.log_size()
    dom.create()
    await booted_anew(guest.serial_log, offset, None)
    await write(guest, "b")
    result = await bk.service.restore_backup(guest.name, "off", actor=ALICE, safety_snapshot=False)
    assert result.vm_state is VmState.SHUT_OFF
    assert not dom.isActive()
    assert await host_read(guest.disk, 0, DISK) == whole
    assert whole[MIB:] == disk_after_counter("a")

    offset = guest.log_size()
    dom.create()
    booted = await booted_anew(guest.serial_log, offset, None)
    assert booted.disk == counter_in(whole)


# -- 7. verify finds a damaged piece, the next backup repairs it ------------------------------


async def test_verify_names_damaged_points_and_the_next_backup_repairs_them(
    bk: Backups, guest: Guest
) -> None:
    await write(guest, "a")
    one = (await bk.service.create_backup(guest.name, "v-1", actor=ALICE)).snapshot
    two = (await bk.service.create_backup(guest.name, "v-2", actor=ALICE)).snapshot
    clean = await bk.service.verify(guest.name, None, actor=ALICE)
    assert clean.report.ok
    assert not clean.damaged

    # A chunk of the data both points share: its file on disk gets one byte flipped.
    piece = expected_pattern("a", DATA_AT + 4, 4)
    path = chunk_file(bk.root, piece)
    assert path.exists(), "the data chunk is not where the store keeps it"
    stored = bytearray(path.read_bytes())
    stored[len(stored) // 2] ^= 0x01
    path.write_bytes(bytes(stored))

    found = await bk.service.verify(guest.name, None, actor=ALICE)
    assert not found.report.ok
    assert found.report.damaged_chunks == (hashlib.sha256(piece).hexdigest(),)
    assert {s.label for s in found.damaged} == {one.label, two.label}
    assert all(s.damage for s in found.damaged)
    rows = {
        s.label: s
        for vm in await bk.core.snapshots.list_snapshots(guest.name)
        for s in vm.snapshots
    }
    assert rows["v-1"].damage
    assert rows["v-2"].damage

    # The VM still has that data: the next backup stores the piece again.
    three = await bk.service.create_backup(guest.name, "v-3", actor=ALICE)
    bk.note("7: backup after a damaged piece", three)
    assert three.figures.bytes_new >= CHUNK_SIZE
    assert path.exists()
    again = await bk.service.verify(guest.name, None, actor=ALICE)
    assert again.report.ok, again.report
    assert {s.label for s in again.repaired} == {"v-1", "v-2"}
    rows = {
        s.label: s
        for vm in await bk.core.snapshots.list_snapshots(guest.name)
        for s in vm.snapshots
    }
    assert rows["v-1"].damage is None
    assert rows["v-2"].damage is None


# -- 8. prune and space reclaim ---------------------------------------------------------------


async def test_deleting_points_frees_space_and_every_remaining_point_restores(
    bk: Backups, guest: Guest
) -> None:
    taken: dict[str, Snapshot] = {}
    for seed in ("a", "b", "c", "d"):
        await write(guest, seed)
        result = await bk.service.create_backup(guest.name, f"p-{seed}", actor=ALICE)
        taken[seed] = result.snapshot
        bk.note(f"8: point {seed}", result)
    full_size = store_bytes(bk.root)

    freed = 0
    for seed in ("a", "c"):
        deleted = await bk.core.snapshots.delete_snapshot(guest.name, f"p-{seed}", actor=ALICE)
        freed += deleted.freed_bytes or 0
    after = store_bytes(bk.root)
    FIGURES.append(
        f"8: store {full_size / 1024:.0f} KiB with 4 points, {after / 1024:.0f} KiB after "
        f"deleting 2 (GC said {freed / 1024:.0f} KiB freed)"
    )
    assert freed > 0
    assert after < full_size

    report = await bk.store.verify()
    assert report.ok, report
    remaining = await bk.store.list_points(guest_uuid(taken))
    assert sorted(m.label for m in remaining) == ["p-b", "p-d"]
    labels = {
        s.label for vm in await bk.core.snapshots.list_snapshots(guest.name) for s in vm.snapshots
    }
    assert labels == {"p-b", "p-d"}

    await restore_and_check(bk, guest, taken["b"], "b", safety=False)
    await restore_and_check(bk, guest, taken["d"], "d", safety=False)


def guest_uuid(taken: dict[str, Snapshot]) -> str:
    return next(iter(taken.values())).vm_uuid


# -- 9. a backup killed mid-way ---------------------------------------------------------------


def fill_from_host(disk: Path) -> None:
    """Different data in every MiB after the counter's chunk, written on the host (fast, where
    the guest under TCG is slow), so that a backup has 60 MiB to read and store."""
    commands = []
    for mib in range(4, DISK // MIB):
        commands += ["-c", f"write -P {mib} {mib}M 1M"]
    subprocess.run(
        ["qemu-io", "-f", "qcow2", *commands, str(disk)], check=True, capture_output=True
    )


def kill_backup_midway(db: Path, root: Path, vm: str, vm_uuid: str) -> str:
    """Run a backup in a snapbot process (on the test's catalogue) SIGKILLed once its first
    new chunk is stored; what it printed before it died."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.system.backup_kill_worker",
            f"sqlite://{db}",
            TEST_URI,
            str(root),
            vm,
            vm_uuid,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == -signal.SIGKILL, f"the worker was not killed mid-way:\n{out}"
    assert "killing" in out, out
    return out


def backup_job(dom: libvirt.virDomain) -> bool:
    return bool(dom.isActive()) and job_type(dom) != libvirt.VIR_DOMAIN_JOB_NONE


@pytest.mark.parametrize("running", [True, False], ids=["running", "shut-off"])
async def test_backup_killed_midway_leaves_the_store_consistent(
    bk: Backups,
    guests: Guests,
    workdir: Path,
    tmp_path: Path,
    libvirt_conn: libvirt.virConnect,
    running: bool,
) -> None:
    how = "running" if running else "shut off"
    guest = guests(workdir)
    dom = libvirt_conn.lookupByName(guest.name)
    dom.destroy()
    await asyncio.to_thread(fill_from_host, guest.disk)
    if running:
        offset = guest.log_size()
        dom.create()
        await booted_anew(guest.serial_log, offset, None)
    before = await bk.service.create_backup(guest.name, "before-kill", actor=ALICE)
    bk.note(f"9 ({how}): backup of 60 MiB of data before the kill", before)
    # The killed backup must have new data to store: change the data region.
    if running:
        await write(guest, "k", at=4, count=4)
    else:
        await asyncio.to_thread(
            subprocess.run,
            ["qemu-io", "-f", "qcow2", "-c", "write -P 200 4M 56M", str(guest.disk)],
            check=True,
            capture_output=True,
        )

    # The worker shares the test's catalogue (the ``catalogue`` fixture's file): the snapbot
    # that starts again after the kill is this test's core.
    db = tmp_path / "catalogue.db"
    out = await asyncio.to_thread(kill_backup_midway, db, bk.root, guest.name, dom.UUIDString())
    FIGURES.append(f"9 ({how}): worker said {out.strip().splitlines()[-1]!r}")

    # The store, as anyone reading it sees it: only the point taken before, and whole.
    listed = await bk.store.list_points(dom.UUIDString())
    assert [m.label for m in listed] == ["before-kill"]
    report = await bk.store.verify()
    assert report.ok, report
    # What libvirt and the host hold before snapbot runs again.
    job_left = backup_job(dom)
    nbd_left = qemu_nbd_on(guest.workdir)
    FIGURES.append(
        f"9 ({how}): after the kill, before recovery: backup job on the domain: {job_left}; "
        f"qemu-nbd left: {nbd_left}"
    )
    assert not nbd_left, nbd_left

    try:
        # snapbot starts again: it recovers the operation the dead process left.
        assert await bk.core.watch.connect_once()
        killed = [
            op
            for op in await bk.catalogue.operations(dom.UUIDString())
            if op.snapshot_label == "killed-midway"
        ]
        assert len(killed) == 1
        FIGURES.append(f"9 ({how}): recovered: {killed[0].status.value}: {killed[0].outcome}")
        assert killed[0].status.value == "reconciled"
        assert not backup_job(dom), f"backup job still on the domain: {dom.jobStats()}"
        assert not qemu_nbd_on(guest.workdir)
        gc = await bk.service.reclaim()
        FIGURES.append(f"9 ({how}): GC after the kill: {gc}")
        point_dirs = list((bk.root / "points" / dom.UUIDString()).iterdir())
        assert len(point_dirs) == 1, point_dirs
        # The user's next moves: another backup, and (shut off) starting the VM.
        after = await bk.service.create_backup(guest.name, "after-kill", actor=ALICE)
        bk.note(f"9 ({how}): backup after the kill", after)
        if not running:
            dom.create()
        assert dom.isActive()
        report = await bk.store.verify()
        assert report.ok, report
    finally:
        for line in qemu_nbd_on(guest.workdir):
            os.kill(int(line.split(":")[0]), signal.SIGTERM)
        if backup_job(dom):
            dom.abortJob()


# -- 10. archive ------------------------------------------------------------------------------


async def test_archive_moves_a_full_snapshot_to_the_store(
    bk: Backups, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    await write(guest, "a")
    full = (await bk.core.snapshots.create_snapshot(guest.name, "to-archive", actor=ALICE)).snapshot
    dom = libvirt_conn.lookupByName(guest.name)
    assert full.libvirt_name in dom.snapshotListNames()
    await write(guest, "b")

    archived = await bk.service.archive(guest.name, "to-archive", actor=ALICE)
    FIGURES.append(
        f"10: archive {describe(archived.figures)}, freed {archived.freed_bytes} bytes, "
        f"{archived.seconds:.2f} s"
    )
    assert full.libvirt_name not in dom.snapshotListNames()
    assert archived.snapshot.kind is SnapshotKind.ARCHIVED
    assert archived.snapshot.point_id is not None
    rows = [s for vm in await bk.core.snapshots.list_snapshots(guest.name) for s in vm.snapshots]
    assert [(s.label, s.kind) for s in rows] == [("to-archive", SnapshotKind.ARCHIVED)]

    point = await point_image(bk, archived.snapshot, guest.workdir)
    result = await bk.service.restore_backup(
        guest.name, "to-archive", actor=ALICE, safety_snapshot=False
    )
    FIGURES.append(f"10: restore of the archived snapshot: VM {result.vm_state.value}")
    # Taken running, so it is started again (from its disks: the memory was not kept).
    assert result.vm_state is VmState.RUNNING
    offset = guest.log_size()
    assert await after_counter(guest.disk) == point[MIB:] == disk_after_counter("a")
    booted = await asyncio.to_thread(
        wait_for_counter, guest.serial_log, after_offset=offset, timeout=60.0
    )
    assert booted.disk >= counter_in(point)
