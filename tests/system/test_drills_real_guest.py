"""Restore drills on the real counter guest (issue 10, "Restore drills"): the wired
``DrillService`` over the tests' own libvirtd, a ``DirectoryBackupStore`` in the test's workdir,
``LibvirtDiskAccess`` and ``LibvirtDrillLab``.

A drill that passes shows the restored guest's console counting; one whose restore point was
damaged on purpose fails and says so. After each: no ``snapbot-drill-`` domain in libvirt, no
temporary directory on disk, and the original guest still running the same boot.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import libvirt
import pytest

from bot import messages
from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.backupstore.chunks import CHUNKS_DIR
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess
from core.adapters.libvirt.domain_copy import drill_domain
from core.adapters.libvirt.drill import LibvirtDrillLab
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.bootstrap import wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.drills import (
    DRILL_VM_PREFIX,
    DrillFailed,
    DrillPolicies,
    DrillPolicy,
    DrillResult,
    DrillSource,
    ReadyKind,
    ReadySignal,
)
from core.domain.operation import OperationKind, OperationStatus
from core.services.backups import BackupService
from core.services.drills import DrillService
from core.services.snapshots import SnapshotService
from tests.conftest import ALICE
from tests.system import daemon
from tests.system.conftest import TEST_URI, Guest, new_workdir, remove_files
from tests.system.guest.guest import read_counter_lines

pytestmark = pytest.mark.system

# Figures printed at the end of the run (pytest -s) for the report.
FIGURES: list[str] = []
COUNTER = ReadySignal(ReadyKind.CONSOLE, r"SNAPBOT-COUNTER mem=\d+")


@pytest.fixture(scope="module", autouse=True)
def print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\ndrill figures:\n  " + "\n  ".join(FIGURES))


def drill_domains(conn: libvirt.virConnect) -> list[str]:
    return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(DRILL_VM_PREFIX))


def boot_id(guest: Guest) -> str:
    lines = read_counter_lines(guest.serial_log)
    assert lines, f"{guest.name} printed no counter line"
    return lines[-1].boot


@dataclass
class Lab:
    lab: LibvirtDrillLab
    temp_root: Path


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    temp_root = new_workdir()
    connection = LibvirtConnection(TEST_URI, workers=4)
    drill_lab = LibvirtDrillLab(connection, owner="test", temp_root=temp_root)
    try:
        yield Lab(drill_lab, temp_root)
    finally:
        await drill_lab.close()
        await connection.close()
        remove_files(temp_root)


def with_display(domain_xml: str) -> str:
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    assert devices is not None
    ET.SubElement(devices, "graphics", type="vnc", autoport="yes")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="vga")
    return ET.tostring(root, encoding="unicode")


async def test_throwaway_vm_is_isolated_shows_its_console_and_goes(
    lab: Lab, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    """The lab alone: a copy of the guest's configuration with a display added boots from a
    disk of its own, its console is read, a PNG screenshot is taken, and nothing remains."""
    dom = libvirt_conn.lookupByName(guest.name)
    xml = with_display(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    before_boot = boot_id(guest)
    async with lab.lab.throwaway_vm(
        xml, {"vda": 64 << 20}, {}, name=f"{DRILL_VM_PREFIX}lab-test"
    ) as vm:
        assert set(vm.disks) == {"vda"}
        await vm.start()
        (name,) = drill_domains(libvirt_conn)
        copy = libvirt_conn.lookupByName(name)
        copy_xml = ET.fromstring(copy.XMLDesc(0))
        assert copy.UUIDString() != dom.UUIDString()
        assert copy_xml.find("devices/interface") is None
        assert not copy.isPersistent()
        sources = [s.get("file", "") for s in copy_xml.iterfind("devices/disk/source")]
        assert sources
        assert all(s.startswith(str(lab.temp_root)) for s in sources)
        seconds = await vm.wait_ready(COUNTER, 60.0)
        assert 0 < seconds < 60
        png = await vm.screenshot()
        assert png is not None
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert drill_domains(libvirt_conn) == []
    assert list(lab.temp_root.iterdir()) == []
    assert dom.isActive()
    assert boot_id(guest) == before_boot


async def test_a_signal_that_never_comes_fails_with_the_console_tail(
    lab: Lab, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    dom = libvirt_conn.lookupByName(guest.name)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    async def drill() -> None:
        async with lab.lab.throwaway_vm(
            xml, {"vda": 64 << 20}, {}, name=f"{DRILL_VM_PREFIX}lab-never"
        ) as vm:
            await vm.start()
            await vm.wait_ready(ReadySignal(ReadyKind.CONSOLE, "NEVER-PRINTED"), 5.0)

    with pytest.raises(DrillFailed, match="not ready within 5 s") as caught:
        await drill()
    assert "console" in str(caught.value)
    assert drill_domains(libvirt_conn) == []
    assert list(lab.temp_root.iterdir()) == []


# -- the service: drills of restore points in the backup store -----------------------------------


@dataclass
class Drills:
    service: DrillService
    snapshots: SnapshotService
    backups: BackupService
    catalogue: TortoiseCatalogue
    store_root: Path
    temp_root: Path


@pytest.fixture
async def drills(catalogue: TortoiseCatalogue, workdir: Path) -> AsyncIterator[Drills]:
    root = workdir / "store"
    root.mkdir()
    temp_root = new_workdir()
    connection = LibvirtConnection(TEST_URI, workers=4)
    hv = LibvirtHypervisor(connection)
    store = DirectoryBackupStore(root, gc_safety_margin=timedelta(0))
    disks = LibvirtDiskAccess(connection, temp_root=temp_root)
    drill_lab = LibvirtDrillLab(connection, temp_root=temp_root)
    settings = Settings(
        libvirt_uri=TEST_URI,
        libvirt_uri_explicit=True,
        data_dir=workdir,
        database_url="sqlite://:memory:",
        backup_dir=root,
        drills=DrillPolicies((DrillPolicy("*", ready=COUNTER, timeout=90.0, owner="U0OWNER"),)),
    )
    core = wire(
        settings,
        hv,
        catalogue,
        SystemClock(),
        libvirt_uri=TEST_URI,
        store=store,
        disks=disks,
        lab=drill_lab,
    )
    assert core.drills is not None
    assert core.backups is not None
    try:
        yield Drills(core.drills, core.snapshots, core.backups, catalogue, root, temp_root)
    finally:
        await drill_lab.close()
        await disks.close()
        store.close()
        await hv.close()
        remove_files(temp_root)


def assert_nothing_left(drills: Drills, conn: libvirt.virConnect) -> None:
    assert drill_domains(conn) == []
    assert list(drills.temp_root.iterdir()) == []


async def test_a_drill_of_a_backup_boots_its_copy_and_passes(
    drills: Drills, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    before = boot_id(guest)
    point = (await drills.backups.create_backup(guest.name, "before-drill", actor=ALICE)).snapshot

    outcome = await drills.service.run(guest.name, actor=ALICE)

    drill = outcome.drill
    assert outcome.passed, drill.error
    assert drill.label == point.label
    assert drill.source is DrillSource.STORE
    assert drill.point_id == point.point_id
    assert drill.ready_seconds is not None
    assert 0 < drill.ready_seconds < 90
    assert drill.point_age >= timedelta(0)
    assert outcome.owner == "U0OWNER"
    assert outcome.signal == COUNTER
    assert not outcome.memory_not_included
    report = messages.drill_report(outcome)
    assert "Drill passed" in report
    assert f"`{point.label}`" in report
    assert "<@U0OWNER>" not in report
    FIGURES.append(
        f"passing drill: ready {drill.ready_seconds:.1f} s after start, point "
        f"{drill.point_age.total_seconds():.0f} s old"
    )
    (recorded,) = await drills.catalogue.drills()
    assert recorded.result is DrillResult.PASSED
    last = await drills.catalogue.last_passed_drills()
    assert last[recorded.vm_uuid].id == drill.id
    ops = [o for o in await drills.catalogue.operations() if o.kind is OperationKind.DRILL]
    assert [o.status for o in ops] == [OperationStatus.SUCCEEDED]
    assert_nothing_left(drills, libvirt_conn)
    # The original was never touched: still running the same boot.
    assert libvirt_conn.lookupByName(guest.name).isActive()
    assert boot_id(guest) == before


async def test_a_drill_of_a_damaged_backup_fails_and_says_why(
    drills: Drills, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    before = boot_id(guest)
    await drills.backups.create_backup(guest.name, "to-damage", actor=ALICE)
    # Every stored piece of the point (file names are their SHA-256): one byte flipped in each.
    chunks = [
        p
        for p in (drills.store_root / CHUNKS_DIR).rglob("*")
        if p.is_file() and len(p.name) == 64 and p.stat().st_size > 0
    ]
    assert chunks, "the point stored no chunk"
    for path in chunks:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    outcome = await drills.service.run(guest.name, "to-damage", actor=ALICE)

    assert not outcome.passed
    assert outcome.drill.result is DrillResult.FAILED
    assert outcome.drill.error is not None
    assert "damaged" in outcome.drill.error
    report = messages.drill_report(outcome)
    assert "Drill failed" in report
    assert "<@U0OWNER>, please look" in report
    assert "damaged" in report
    assert outcome.drill.ready_seconds is None
    (recorded,) = await drills.catalogue.drills()
    assert recorded.result is DrillResult.FAILED
    assert await drills.catalogue.last_passed_drills() == {}
    ops = [o for o in await drills.catalogue.operations() if o.kind is OperationKind.DRILL]
    assert [o.status for o in ops] == [OperationStatus.FAILED]
    assert_nothing_left(drills, libvirt_conn)
    assert libvirt_conn.lookupByName(guest.name).isActive()
    assert boot_id(guest) == before


async def test_a_drill_of_a_full_snapshot_boots_its_disk_state_without_memory(
    drills: Drills, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    before = boot_id(guest)
    await drills.snapshots.create_snapshot(guest.name, "full-1", actor=ALICE)

    outcome = await drills.service.run(guest.name, "full-1", actor=ALICE)

    assert outcome.passed, outcome.drill.error
    assert outcome.drill.source is DrillSource.INTERNAL
    assert "memory state is not part of a drill" in messages.drill_report(outcome)
    FIGURES.append(f"full-snapshot drill: ready {outcome.drill.ready_seconds:.1f} s after start")
    assert outcome.memory_not_included
    # The VM's lock was held for the copy only: a DRILL operation that succeeded, and the
    # drill's own record.
    ops = [o for o in await drills.catalogue.operations() if o.kind is OperationKind.DRILL]
    assert sorted(o.status.value for o in ops) == ["succeeded", "succeeded"]
    assert await drills.catalogue.running_operations() == []
    assert_nothing_left(drills, libvirt_conn)
    assert libvirt_conn.lookupByName(guest.name).isActive()
    assert boot_id(guest) == before


def leftover_domain(
    conn: libvirt.virConnect, guest: Guest, root: Path, name: str, mark: bool
) -> Path:
    """A throwaway VM as a snapbot killed mid-drill leaves it: running, its files in its
    directory (``mark``: with snapbot's drill mark, started in 2001)."""
    directory = root / name
    directory.mkdir()
    daemon.give_to_test_user(directory)
    dom = conn.lookupByName(guest.name)
    made = drill_domain(
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
        ["vda"],
        name=name,
        uuid=str(uuid.uuid4()),
        directory=str(directory),
        started_at="2001-01-01T00:00:00+00:00",
        owner="a snapbot that died",
    )
    disk = Path(made.disk_paths["vda"])
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    daemon.give_to_test_user(disk)
    xml = made.xml
    if not mark:
        root_element = ET.fromstring(xml)
        metadata = root_element.find("metadata")
        assert metadata is not None
        root_element.remove(metadata)
        xml = ET.tostring(root_element, encoding="unicode")
    conn.createXML(xml, 0)
    old = datetime(2001, 1, 1, tzinfo=UTC).timestamp()
    os.utime(directory, (old, old))
    return directory


async def test_the_sweep_removes_only_marked_leftovers_of_dead_drills(
    lab: Lab, guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    marked = leftover_domain(libvirt_conn, guest, lab.temp_root, f"{DRILL_VM_PREFIX}left", True)
    unmarked_name = f"{DRILL_VM_PREFIX}not-ours"
    unmarked = leftover_domain(libvirt_conn, guest, lab.temp_root, unmarked_name, False)
    try:
        assert drill_domains(libvirt_conn) == [f"{DRILL_VM_PREFIX}left", unmarked_name]
        # Only what is older than ten years: a drill running now is never swept.
        removed = await lab.lab.sweep_leftovers(timedelta(days=3650))
        assert removed == [f"{DRILL_VM_PREFIX}left"]
        assert drill_domains(libvirt_conn) == [unmarked_name]
        assert not marked.exists()
        # Without the mark it is not snapbot's: it stays, and so do the files it uses.
        assert unmarked.exists()
        assert await lab.lab.sweep_leftovers(timedelta(0)) == []
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            libvirt_conn.lookupByName(unmarked_name).destroy()
    assert drill_domains(libvirt_conn) == []
