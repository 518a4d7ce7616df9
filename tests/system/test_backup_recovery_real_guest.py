"""What a snapbot that died during a backup leaves on the real guest, and how the next one ends
it: libvirt keeps a pull-mode backup job (and its scratch file) after its client is gone, and
a second job on the VM is refused until someone ends the first."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import libvirt
import pytest

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess
from core.domain.vm import Vm, VmState
from tests.system.conftest import TEST_URI, Guest

# Recovery after a killed backup is a fault run: `make reliability`, with the fault suite.
pytestmark = [pytest.mark.system, pytest.mark.reliability]


def vm_of(conn: libvirt.virConnect, guest: Guest) -> Vm:
    dom = conn.lookupByName(guest.name)
    return Vm(dom.UUIDString(), guest.name, VmState.RUNNING, dom.maxMemory() * 1024)


def backup_job_socket(dom: libvirt.virDomain) -> Path | None:
    """The NBD socket of the VM's backup job, None when it has none."""
    try:
        xml = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_BACKUP:
            return None
        raise
    import xml.etree.ElementTree as ET

    server = ET.fromstring(xml).find("server")
    assert server is not None
    return Path(server.get("socket", ""))


async def test_a_backup_job_a_dead_process_left_is_ended_by_the_next(
    guest: Guest, libvirt_conn: libvirt.virConnect, access: LibvirtDiskAccess, temp_root: Path
) -> None:
    vm = vm_of(libvirt_conn, guest)
    dom = libvirt_conn.lookupByName(guest.name)
    # A process that opened a backup view and died: its context never exits.
    died = LibvirtDiskAccess(LibvirtConnection(TEST_URI, workers=2), temp_root=temp_root)
    view = died.backup_view(vm)
    await view.__aenter__()
    socket = backup_job_socket(dom)
    assert socket is not None
    assert socket.parent.exists()

    # The job blocks the next backup, with libvirt's own words; the refused view cleans up
    # only what it made, never the job in its way.
    with pytest.raises(Exception, match=r"(?i)job|backup"):
        async with access.backup_view(vm):
            pass
    assert backup_job_socket(dom) == socket

    assert await access.end_leftover_job(vm) is True

    assert backup_job_socket(dom) is None
    assert not socket.parent.exists()  # its scratch files went with it
    assert await access.end_leftover_job(vm) is False
    async with access.backup_view(vm) as export:
        assert export.disks["vda"].size == 64 * 1024 * 1024
    with contextlib.suppress(Exception):
        await view.__aexit__(None, None, None)
    await died.close()


async def test_another_tools_backup_job_is_never_touched(
    guest: Guest,
    libvirt_conn: libvirt.virConnect,
    access: LibvirtDiskAccess,
    workdir: Path,
) -> None:
    vm = vm_of(libvirt_conn, guest)
    dom = libvirt_conn.lookupByName(guest.name)
    theirs = workdir / "their-backup.sock"
    dom.backupBegin(
        f"<domainbackup mode='pull'><server transport='unix' socket='{theirs}'/>"
        f"<disks><disk name='vda' backup='yes' type='file'>"
        f"<scratch file='{workdir / 'their-scratch.qcow2'}'/></disk></disks></domainbackup>",
        None,
        0,
    )
    try:
        assert await access.end_leftover_job(vm) is False
        assert backup_job_socket(dom) == theirs
    finally:
        await asyncio.to_thread(dom.abortJob)
