"""Fixtures for tests on a real QEMU guest under the system libvirtd (``make test`` starts it and
builds the guest; these tests fail, not skip, when either is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.services.operations import OperationRunner, process_owner
from core.services.reconcile import Reconciler
from core.services.snapshots import SnapshotService
from tests.system.guest.guest import create_disk, domain_xml, wait_for_counter

SYSTEM_URI = "qemu:///system"
BOOT_TIMEOUT = 60.0


def guest_dir() -> Path:
    path = Path(os.environ.get("SNAPBOT_GUEST_DIR", ".build/guest")).resolve()
    if not (path / "vmlinuz").exists() or not (path / "initrd.img").exists():
        pytest.fail(
            f"no test guest in {path}: run the system tests with `make test` (it builds the "
            "guest and starts libvirtd)"
        )
    return path


@dataclass
class Guest:
    """A running test VM: its libvirt name, its serial log, its disk."""

    name: str
    serial_log: Path
    disk: Path
    workdir: Path

    def log_size(self) -> int:
        return self.serial_log.stat().st_size if self.serial_log.exists() else 0


def define_guest(conn: libvirt.virConnect, workdir: Path, *, memory_mib: int = 256) -> Guest:
    """Define and start a counter guest whose files live in ``workdir``."""
    directory = guest_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"snapbot-test-{uuid.uuid4().hex[:8]}"
    disk = workdir / "disk.qcow2"
    serial = workdir / "serial.log"
    create_disk(disk)
    xml = domain_xml(
        name,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        disk=disk,
        serial_log=serial,
        memory_mib=memory_mib,
    )
    dom = conn.defineXML(xml)
    dom.create()
    guest = Guest(name, serial, disk, workdir)
    wait_for_counter(serial, after_offset=0, timeout=BOOT_TIMEOUT)
    return guest


def remove_guest(conn: libvirt.virConnect, name: str) -> None:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


@pytest.fixture
def system_conn() -> Iterator[libvirt.virConnect]:
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"cannot reach libvirtd at {SYSTEM_URI} ({exc}); `make test` starts it")
    yield conn
    conn.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: QEMU (running as root here) must reach it, and paths stay short.
    path = Path("/var/tmp/snapbot-tests") / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def guest(system_conn: libvirt.virConnect, workdir: Path) -> Iterator[Guest]:
    g = define_guest(system_conn, workdir)
    yield g
    remove_guest(system_conn, g.name)


@dataclass
class RealCore:
    hv: LibvirtHypervisor
    catalogue: TortoiseCatalogue
    service: SnapshotService
    reconciler: Reconciler


@pytest.fixture
async def real(catalogue: TortoiseCatalogue) -> AsyncIterator[RealCore]:
    hv = LibvirtHypervisor(LibvirtConnection(SYSTEM_URI, workers=4))
    clock = SystemClock()
    owner = process_owner()
    yield RealCore(
        hv,
        catalogue,
        SnapshotService(hv, catalogue, OperationRunner(catalogue, clock, owner), clock),
        Reconciler(hv, catalogue, clock, owner),
    )
    await hv.close()


@pytest.fixture
def small_fs(workdir: Path) -> Iterator[Path]:
    """A 200 MiB tmpfs: too small for the memory of a 256 MiB guest."""
    mount = workdir / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200M", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
