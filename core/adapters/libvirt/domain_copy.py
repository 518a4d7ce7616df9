"""A backed-up domain XML rewritten for a restore as a VM defined anew: the original again, or a
copy beside it. Pure: no libvirt, no files; ``LibvirtDiskAccess`` creates what it names.

A copy gets a new name, no ``<uuid>`` and no MAC addresses (libvirt or the caller picks new
ones: two VMs with one MAC would fight over a lease), and its own files next to the original's:
``<dir>/<name>-<target>.qcow2`` for each disk, ``<dir>/<name>_VARS.fd`` for the UEFI variables
(libvirt's own naming) and ``<dir>/<name>-<file>`` for a serial or console log written to a file,
so the copy never appends to the original's log. Every restored disk is a flat qcow2 image, so
its ``<driver type>`` becomes qcow2 and any ``<backingStore>`` is dropped.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection
from dataclasses import dataclass

from core.errors import InvalidInput

# A VM name that is also safe inside a file name: no '/', no leading '.' or '-', no spaces.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_CHARDEVS = ("serial", "console", "parallel", "channel")


@dataclass(frozen=True)
class DomainCopy:
    """What to define, and the files to create for it."""

    xml: str
    name: str
    # None for a copy: its UUID is new.
    uuid: str | None
    # Restored disk targets and the image path each is created at.
    disk_paths: dict[str, str]
    # Where the UEFI variables go (None: the domain has no ``<nvram>`` path).
    nvram_path: str | None
    # What the copy does not bring along, for the user (a TPM's state).
    notes: tuple[str, ...]


def is_backed_up(disk: ET.Element) -> bool:
    """A disk the backup holds: a writable, unshared ``device='disk'``. CD-ROMs, read-only and
    shareable disks are shared media, not the VM's own state."""
    return (
        disk.get("device", "disk") == "disk"
        and disk.find("readonly") is None
        and disk.find("shareable") is None
    )


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    return target.get("dev", "") if target is not None else ""


def check_vm_name(name: str) -> str:
    if not _NAME_PATTERN.match(name):
        raise InvalidInput(
            f"{name!r} cannot name a restored VM: use up to 100 letters, digits, '.', '_', '+' "
            "or '-', starting with a letter or digit (it becomes part of its file names)"
        )
    return name


def copy_domain(domain_xml: str, targets: Collection[str], *, new_name: str | None) -> DomainCopy:
    """``domain_xml`` rewritten to be defined with the disks ``targets`` restored into new
    images: as a copy named ``new_name``, or (``None``) as the original again. Raises
    ``InvalidInput`` when a disk cannot be restored this way or ``targets`` do not match the
    VM's disks."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError as exc:
        raise InvalidInput(f"the backed-up domain XML cannot be read: {exc}") from exc
    old_name = root.findtext("name", default="").strip()
    if new_name is not None:
        check_vm_name(new_name)
    name = new_name if new_name is not None else old_name
    if not name:
        raise InvalidInput("the backed-up domain XML names no VM")

    disk_paths: dict[str, str] = {}
    for disk in root.iterfind("devices/disk"):
        if not is_backed_up(disk):
            continue
        target = _target(disk)
        if target not in targets:
            raise InvalidInput(
                f"disk {target} of VM {old_name} is not in the restore point, so a restored VM "
                "would lack it"
            )
        kind = disk.get("type", "file")
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if kind != "file" or source is None or not path:
            raise InvalidInput(
                f"disk {target} of VM {old_name} is a {kind} disk: a restore as a new VM "
                "creates image files only; restore into the existing VM instead, or give the "
                "disk a file"
            )
        if new_name is not None:
            path = posixpath.join(posixpath.dirname(path), f"{new_name}-{target}.qcow2")
        for attribute in list(source.attrib):
            if attribute != "file":
                del source.attrib[attribute]
        source.set("file", path)
        for child in list(source):
            source.remove(child)  # seclabels, reservations: of the old file
        driver = disk.find("driver")
        if driver is None:
            driver = ET.SubElement(disk, "driver", name="qemu")
        driver.set("type", "qcow2")
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
        disk_paths[target] = path
    unknown = sorted(set(targets) - disk_paths.keys())
    if unknown:
        raise InvalidInput(
            f"the restore point has disk(s) {', '.join(unknown)} that VM {old_name}'s "
            "configuration does not list as writable disks"
        )

    nvram = root.find("os/nvram")
    nvram_path = (nvram.text or "").strip() if nvram is not None else ""
    notes: list[str] = []
    if new_name is not None:
        root.find("name").text = new_name  # type: ignore[union-attr]
        for element in root.findall("uuid"):
            root.remove(element)
        for parent in root.iter():
            for mac in parent.findall("mac"):
                if mac.get("address") is not None:
                    parent.remove(mac)
        if nvram is not None and nvram_path:
            nvram_path = posixpath.join(posixpath.dirname(nvram_path), f"{new_name}_VARS.fd")
            nvram.text = nvram_path
        _rename_logs(root, new_name)
    if root.find("devices/tpm/backend[@type='emulator']") is not None:
        notes.append(
            "the TPM's state is not in the backup: the restored VM starts with an empty TPM "
            "(keys sealed to it, BitLocker or LUKS with TPM unlock, need their recovery key)"
        )
    uuid_text = root.findtext("uuid")
    return DomainCopy(
        xml=ET.tostring(root, encoding="unicode"),
        name=name,
        uuid=uuid_text.strip() if uuid_text else None,
        disk_paths=disk_paths,
        nvram_path=nvram_path or None,
        notes=tuple(notes),
    )


def _rename_logs(root: ET.Element, new_name: str) -> None:
    """File-backed character devices (a serial log) and their ``<log>`` files get the copy's own
    file beside the original's: two VMs appending to one log would mix their output."""
    for kind in _CHARDEVS:
        for device in root.iterfind(f"devices/{kind}"):
            source = device.find("source")
            if device.get("type") == "file" and source is not None and source.get("path"):
                source.set("path", _beside(source.get("path", ""), new_name))
            log = device.find("log")
            if log is not None and log.get("file"):
                log.set("file", _beside(log.get("file", ""), new_name))


def _beside(path: str, new_name: str) -> str:
    return posixpath.join(posixpath.dirname(path), f"{new_name}-{posixpath.basename(path)}")


def with_uuid(domain_xml: str, uuid: str) -> str:
    """The XML with its ``<uuid>`` set (a copy's new UUID, chosen before it is defined so the
    restore can name it)."""
    root = ET.fromstring(domain_xml)
    for element in root.findall("uuid"):
        root.remove(element)
    element = ET.Element("uuid")
    element.text = uuid
    root.insert(1, element)
    return ET.tostring(root, encoding="unicode")


# The drill mark in a throwaway VM's <metadata>: what lets a sweep after a crash remove it
# without ever touching a VM that only happens to have a similar name.
DRILL_NAMESPACE = "https://snapbot.invalid/xmlns/drill/1"
DRILL_METADATA_TAG = f"{{{DRILL_NAMESPACE}}}drill"
# Devices that reach outside the VM: a drill copy must not share the original's network,
# its passed-through devices, its host directories or its TPM state.
_ISOLATION_REMOVED = ("interface", "hostdev", "redirdev", "filesystem", "tpm", "smartcard")


@dataclass(frozen=True)
class DrillDomain:
    """A throwaway VM's XML and the files it uses, all inside one directory."""

    xml: str
    disk_paths: dict[str, str]
    nvram_path: str | None
    console_log: str
    has_display: bool


def drill_domain(
    domain_xml: str,
    targets: Collection[str],
    *,
    name: str,
    uuid: str,
    directory: str,
    started_at: str,
    owner: str,
) -> DrillDomain:
    """``domain_xml`` as an isolated throwaway copy: new name and UUID, new disks and UEFI
    variables in ``directory``, no network interface or passed-through device, its first serial
    port written to ``directory/console.log`` (other serial ports and consoles connected to
    nothing), any display listening on localhost only with a port of its own, and snapbot's
    drill mark in ``<metadata>``."""
    copy = copy_domain(domain_xml, targets, new_name=name)
    root = ET.fromstring(copy.xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    disk_paths: dict[str, str] = {}
    for disk in devices.findall("disk"):
        if not is_backed_up(disk):
            # Shared media stay only when read-only (an installer ISO); a shareable writable
            # disk would let the drill write into what the original uses.
            if disk.find("readonly") is None:
                devices.remove(disk)
            continue
        target = _target(disk)
        path = posixpath.join(directory, f"{target}.qcow2")
        source = disk.find("source")
        assert source is not None  # copy_domain gave every restored disk a file source
        source.set("file", path)
        disk_paths[target] = path
    for kind in _ISOLATION_REMOVED:
        for element in devices.findall(kind):
            devices.remove(element)
    nvram_path = None
    nvram = root.find("os/nvram")
    if nvram is not None:
        nvram_path = posixpath.join(directory, "VARS.fd")
        nvram.text = nvram_path
    console_log = posixpath.join(directory, "console.log")
    _isolate_chardevs(devices, console_log)
    has_display = _isolate_graphics(devices)
    for element in root.findall("uuid"):
        root.remove(element)
    uuid_element = ET.Element("uuid")
    uuid_element.text = uuid
    root.insert(1, uuid_element)
    # A crash ends the drill (reported as one) instead of a restart loop; a reboot stays a
    # reboot (first boots of many guests reboot once).
    on_crash = root.find("on_crash")
    if on_crash is None:
        on_crash = ET.SubElement(root, "on_crash")
    on_crash.text = "destroy"
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    mark = ET.SubElement(metadata, DRILL_METADATA_TAG)
    mark.set("started", started_at)
    mark.set("directory", directory)
    mark.set("owner", owner)
    ET.register_namespace("snapbot", DRILL_NAMESPACE)
    return DrillDomain(
        xml=ET.tostring(root, encoding="unicode"),
        disk_paths=disk_paths,
        nvram_path=nvram_path,
        console_log=console_log,
        has_display=has_display,
    )


def _isolate_chardevs(devices: ET.Element, console_log: str) -> None:
    """The first serial port logs to ``console_log``; every other serial port, console and
    parallel port is connected to nothing (a unix socket or a pty of the original's would
    clash, a file would mix two VMs' output). Channels keep their targets (the guest agent's
    socket is generated anew when no path is given), but never the original's socket path."""
    serials = devices.findall("serial")
    for index, device in enumerate(serials):
        _reset_chardev(device)
        if index == 0:
            device.set("type", "file")
            source = ET.Element("source", path=console_log, append="off")
            device.insert(0, source)
        else:
            device.set("type", "null")
    for kind in ("console", "parallel"):
        for device in devices.findall(kind):
            target = device.find("target")
            if (
                kind == "console"
                and serials
                and (target is None or target.get("type") in (None, "serial"))
            ):
                # libvirt makes it an alias of the first serial port: leave it that.
                devices.remove(device)
                continue
            _reset_chardev(device)
            device.set("type", "null")
    for channel in devices.findall("channel"):
        channel_source = channel.find("source")
        if channel.get("type") == "unix" and channel_source is not None:
            channel_source.attrib.pop("path", None)
        for log in channel.findall("log"):
            channel.remove(log)


def _reset_chardev(device: ET.Element) -> None:
    for child in list(device):
        if child.tag in ("source", "log", "protocol", "reconnect"):
            device.remove(child)


def _isolate_graphics(devices: ET.Element) -> bool:
    """VNC and SPICE displays keep their video device (the screenshot is taken from it) but
    listen nowhere (``<listen type='none'/>``): nobody can connect to the copy, and the
    original's port is not fought over. Any other display (a window on the host) is removed.
    True when one remains."""
    kept = False
    for graphics in devices.findall("graphics"):
        if graphics.get("type") not in ("vnc", "spice"):
            devices.remove(graphics)
            continue
        for attribute in ("port", "tlsPort", "websocket", "listen", "socket", "autoport"):
            graphics.attrib.pop(attribute, None)
        for listen in graphics.findall("listen"):
            graphics.remove(listen)
        graphics.insert(0, ET.Element("listen", type="none"))
        kept = True
    return kept
