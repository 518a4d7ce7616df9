"""Build and read libvirt XML with ElementTree; user text never becomes markup.

A label pasted into XML by string formatting could add ``<disk>`` or ``<memory>`` elements
pointing anywhere on the host (cloudstack PR #14201), so every document here is built as a tree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from core.domain.snapshot import CapturedState, HypervisorSnapshot
from core.domain.vm import Disk, DiskFormat

_STATES = {
    "running": CapturedState.RUNNING,
    "paused": CapturedState.PAUSED,
    "pmsuspended": CapturedState.PAUSED,
    "blocked": CapturedState.RUNNING,
}


def snapshot_xml(libvirt_name: str, description: str) -> str:
    """The ``<domainsnapshot>`` document for an internal snapshot."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = libvirt_name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


def with_description(snapshot_xml_text: str, description: str) -> str:
    """The snapshot's XML with its ``<description>`` replaced (for a REDEFINE)."""
    root = ET.fromstring(snapshot_xml_text)
    for old in root.findall("description"):
        root.remove(old)
    if description:
        element = ET.Element("description")
        element.text = description
        # libvirt does not care where it is; after <name> is where virsh puts it
        root.insert(1 if root.find("name") is not None else 0, element)
    return ET.tostring(root, encoding="unicode")


def host_uuid_of(capabilities_xml: str) -> str:
    """The host's UUID from ``virConnectGetCapabilities``."""
    return ET.fromstring(capabilities_xml).findtext("host/uuid", default="").strip()


def parse_snapshot(xml: str, *, is_current: bool) -> HypervisorSnapshot:
    """Read what the domain needs from a snapshot's XML."""
    root = ET.fromstring(xml)
    state_text = root.findtext("state", default="shutoff")
    memory = root.find("memory")
    memory_mode = memory.get("snapshot") if memory is not None else None
    external_disk = any(d.get("snapshot") == "external" for d in root.iterfind("disks/disk"))
    # Snapshots made by older libvirt have no <memory>; a running-state one then has memory.
    has_memory = memory_mode in ("internal", "external") or (
        memory_mode is None and state_text in _STATES
    )
    return HypervisorSnapshot(
        libvirt_name=root.findtext("name", default=""),
        created_at=datetime.fromtimestamp(int(root.findtext("creationTime", default="0")), UTC),
        captured_state=_STATES.get(state_text, CapturedState.SHUT_OFF)
        if has_memory
        else CapturedState.SHUT_OFF,
        has_memory=has_memory,
        description=root.findtext("description", default=""),
        parent=root.findtext("parent/name"),
        is_current=is_current,
        is_external=external_disk or memory_mode == "external",
    )


def parse_disks(domain_xml: str) -> tuple[Disk, ...]:
    """Every disk-like device of a domain: its target, source path, format, and whether it is
    read-only (CD-ROMs and ``<readonly/>`` disks are not captured)."""
    root = ET.fromstring(domain_xml)
    disks = []
    for disk in root.iterfind("devices/disk"):
        driver = disk.find("driver")
        fmt_name = (driver.get("type") if driver is not None else None) or "raw"
        fmt = {"qcow2": DiskFormat.QCOW2, "raw": DiskFormat.RAW}.get(fmt_name, DiskFormat.OTHER)
        source = disk.find("source")
        path = None
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name")
        read_only = disk.get("device") in ("cdrom", "floppy") or disk.find("readonly") is not None
        target = disk.find("target")
        disks.append(
            Disk(
                target=target.get("dev", "?") if target is not None else "?",
                path=path,
                format=fmt,
                format_name=fmt_name,
                read_only=read_only,
                source_type=disk.get("type", "file"),
            )
        )
    return tuple(disks)


def uses_pflash(domain_xml: str) -> bool:
    """True for UEFI firmware kept in pflash, explicit or chosen by ``firmware='efi'``."""
    root = ET.fromstring(domain_xml)
    os_el = root.find("os")
    if os_el is None:
        return False
    loader = os_el.find("loader")
    if loader is not None and loader.get("type") == "pflash":
        return True
    return os_el.get("firmware") == "efi"
