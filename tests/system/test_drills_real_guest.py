"""Restore drills on the real counter guest (issue 10, "Restore drills"): the wired
``DrillService`` over the tests' own libvirtd, a ``DirectoryBackupStore`` in the test's workdir,
``LibvirtDiskAccess`` and ``LibvirtDrillLab``.

A drill that passes shows the restored guest's console counting; one whose restore point was
damaged on purpose fails and says so. After each: no ``snapbot-drill-`` domain in libvirt, no
temporary directory on disk, and the original guest still running the same boot.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.drill import LibvirtDrillLab
from core.domain.drills import (
    DRILL_VM_PREFIX,
    DrillFailed,
    ReadyKind,
    ReadySignal,
)
from tests.system.conftest import TEST_URI, Guest, new_workdir, remove_files
from tests.system.guest.guest import read_counter_lines

pytestmark = pytest.mark.system

COUNTER = ReadySignal(ReadyKind.CONSOLE, r"SNAPBOT-COUNTER mem=\d+")


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
