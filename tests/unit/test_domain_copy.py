"""A backed-up domain XML rewritten for a restore as a new VM (``domain_copy``), and disk
access refused where snapbot does not run on the VM's host."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess, is_local
from core.adapters.libvirt.domain_copy import copy_domain, with_uuid
from core.adapters.libvirt.errors import DiskAccessNotLocal
from core.domain.vm import Vm, VmState
from core.errors import HypervisorError, InvalidInput

UUID = "6f1e2f0c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"

DOMAIN = f"""<domain type='kvm'>
  <name>web</name>
  <uuid>{UUID}</uuid>
  <memory unit='KiB'>1048576</memory>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/var/lib/libvirt/images/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/data/web-data.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/iso/debian.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/srv/shared/cluster.img'/>
      <target dev='vdc' bus='virtio'/>
      <shareable/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:ab:cd:ef'/>
      <source bridge='br0'/>
    </interface>
    <serial type='file'>
      <source path='/var/log/vms/web-serial.log' append='on'/>
      <target port='0'/>
      <log file='/var/log/vms/web-chardev.log'/>
    </serial>
    <console type='file'>
      <source path='/var/log/vms/web-serial.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
  </devices>
</domain>"""


def parsed(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_copy_gets_new_name_no_uuid_no_macs_and_its_own_files_beside_the_originals() -> None:
    copy = copy_domain(DOMAIN, {"vda", "vdb"}, new_name="web-copy")
    root = parsed(copy.xml)
    assert copy.name == "web-copy" == root.findtext("name")
    assert copy.uuid is None
    assert root.find("uuid") is None
    # libvirt generates new MACs; the interfaces themselves stay
    assert len(root.findall("devices/interface")) == 2
    assert root.findall("devices/interface/mac") == []
    assert copy.disk_paths == {
        "vda": "/var/lib/libvirt/images/web-copy-vda.qcow2",
        "vdb": "/srv/data/web-copy-vdb.qcow2",
    }
    sources = [d.find("source").get("file") for d in root.iterfind("devices/disk")]  # type: ignore[union-attr]
    assert sources == [
        "/var/lib/libvirt/images/web-copy-vda.qcow2",
        "/srv/data/web-copy-vdb.qcow2",
        "/srv/iso/debian.iso",  # shared media are not copied
        "/srv/shared/cluster.img",
    ]
    assert copy.nvram_path == "/var/lib/libvirt/qemu/nvram/web-copy_VARS.fd"
    assert root.findtext("os/nvram") == copy.nvram_path
    assert root.find("os/nvram").get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"  # type: ignore[union-attr]


def test_restored_disks_are_flat_qcow2_images() -> None:
    root = parsed(copy_domain(DOMAIN, {"vda", "vdb"}, new_name="web2").xml)
    restored = root.findall("devices/disk")[:2]
    assert [d.find("driver").get("type") for d in restored] == ["qcow2", "qcow2"]  # type: ignore[union-attr]
    assert all(d.find("backingStore") is None for d in restored)
    # the CD-ROM keeps its format
    assert root.findall("devices/disk")[2].find("driver").get("type") == "raw"  # type: ignore[union-attr]


def test_copy_writes_its_serial_log_to_its_own_file() -> None:
    root = parsed(copy_domain(DOMAIN, {"vda", "vdb"}, new_name="web2").xml)
    assert root.find("devices/serial/source").get("path") == "/var/log/vms/web2-web-serial.log"  # type: ignore[union-attr]
    assert root.find("devices/serial/log").get("file") == "/var/log/vms/web2-web-chardev.log"  # type: ignore[union-attr]
    assert root.find("devices/console/source").get("path") == "/var/log/vms/web2-web-serial.log"  # type: ignore[union-attr]


def test_tpm_state_is_named_as_not_restored() -> None:
    copy = copy_domain(DOMAIN, {"vda", "vdb"}, new_name="web2")
    assert any("TPM" in note for note in copy.notes)
    assert parsed(copy.xml).find("devices/tpm") is not None


def test_without_new_name_the_original_comes_back_as_it_was() -> None:
    copy = copy_domain(DOMAIN, {"vda", "vdb"}, new_name=None)
    root = parsed(copy.xml)
    assert copy.name == "web"
    assert copy.uuid == UUID == root.findtext("uuid")
    assert copy.disk_paths == {
        "vda": "/var/lib/libvirt/images/web.qcow2",
        "vdb": "/srv/data/web-data.img",
    }
    assert [m.get("address") for m in root.iterfind("devices/interface/mac")] == [
        "52:54:00:12:34:56",
        "52:54:00:ab:cd:ef",
    ]
    assert copy.nvram_path == "/var/lib/libvirt/qemu/nvram/web_VARS.fd"
    assert root.find("devices/serial/source").get("path") == "/var/log/vms/web-serial.log"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "source"),
    [
        ("block", "<source dev='/dev/vg0/web'/>"),
        ("network", "<source protocol='rbd' name='p/web'/>"),
    ],
)
def test_block_and_network_disks_are_refused_with_the_reason(kind: str, source: str) -> None:
    xml = DOMAIN.replace(
        "<disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source file='/srv/data/web-data.img'/>",
        f"<disk type='{kind}' device='disk'>\n      <driver name='qemu' type='raw'/>\n      {source}",
    )
    with pytest.raises(InvalidInput, match=f"vdb of VM web is a {kind} disk"):
        copy_domain(xml, {"vda", "vdb"}, new_name="web2")


def test_targets_must_match_the_writable_disks() -> None:
    with pytest.raises(InvalidInput, match="disk vdb of VM web is not in the restore point"):
        copy_domain(DOMAIN, {"vda"}, new_name="web2")
    with pytest.raises(InvalidInput, match="vdz"):
        copy_domain(DOMAIN, {"vda", "vdb", "vdz"}, new_name="web2")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "with space", "x" * 101])
def test_names_that_cannot_be_file_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        copy_domain(DOMAIN, {"vda", "vdb"}, new_name=name)


def test_with_uuid_sets_exactly_one_uuid() -> None:
    copy = copy_domain(DOMAIN, {"vda", "vdb"}, new_name="web2")
    root = parsed(with_uuid(copy.xml, "11111111-2222-4333-8444-555555555555"))
    assert [u.text for u in root.findall("uuid")] == ["11111111-2222-4333-8444-555555555555"]


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///session", True),
        ("qemu:///session?socket=/run/user/1000/libvirt/libvirt-sock", True),
        ("qemu+unix:///system", True),
        ("qemu+ssh://root@kvm1/system", False),
        ("qemu+tcp://kvm1/system", False),
        ("qemu+tls://kvm1.example.com/system", False),
        ("test:///default", False),
    ],
)
def test_disks_are_reached_only_on_a_local_uri(uri: str, local: bool) -> None:
    assert is_local(uri) is local


async def test_a_remote_connection_is_refused_saying_snapbot_must_run_on_the_host() -> None:
    connection = LibvirtConnection("qemu+ssh://root@kvm1/system")
    access = LibvirtDiskAccess(connection)
    vm = Vm(UUID, "web", VmState.RUNNING, 1 << 30)
    try:
        with pytest.raises(HypervisorError, match="need snapbot running on the VM's host"):
            async with access.backup_view(vm):
                pass
        with pytest.raises(DiskAccessNotLocal):
            async with access.restore_as_new(DOMAIN, {"vda": 1}, new_name="x", blobs={}):
                pass
    finally:
        await access.close()
        await connection.close()
