"""Storage facts read through libvirt: where a snapshot of a disk writes and how much room is
left there, and how many bytes a disk image occupies.

On a remote host (``qemu+ssh://``, ``qemu+tls://``) snapbot cannot stat a file: the host's
libvirt can. Free space comes from the storage pool that holds the image (its volume, else
a pool whose target is the image's directory), the room inside a block device from its block
info, and a disk's allocation from the domain's block info, else its volume's. What libvirt
cannot show is said plainly, with what would make it measurable.

Every function here runs on a connection pool thread with that thread's connection.
"""

from __future__ import annotations

import contextlib
import posixpath
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from core.domain.vm import Disk

# What one disk's place measured as: (key of the place, where, free bytes, why unknown).
Measured = tuple[str, str, int | None, str | None]


def _volume_pool_name(dom: Any, target: str) -> str | None:
    """The pool named by a ``<disk type='volume'>`` (its source has no path to look up)."""
    root = ET.fromstring(dom.XMLDesc(0))
    for disk in root.iterfind("devices/disk"):
        found = disk.find("target")
        source = disk.find("source")
        if found is not None and found.get("dev") == target and source is not None:
            return source.get("pool")
    return None


def _pool_of(conn: Any, dom: Any, disk: Disk) -> Any | None:
    """The storage pool an image lives in, or None when no pool of that host holds it."""
    if disk.source_type == "volume":
        name = _volume_pool_name(dom, disk.target)
        if name is None:
            return None
        try:
            return conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            return None
    if not disk.path:
        return None
    try:
        return conn.storageVolLookupByPath(disk.path).storagePoolLookupByVolume()
    except libvirt.libvirtError:
        pass
    # A pool over the image's directory that has not listed the image yet (created after the
    # pool's last refresh) still measures the right filesystem.
    directory = posixpath.dirname(disk.path) or "/"
    try:
        return conn.storagePoolLookupByTargetPath(directory)
    except libvirt.libvirtError:
        pass
    # That lookup sees running pools only (and some drivers lack it); a stopped one over the
    # directory is worth naming too, since starting it is all it takes.
    for pool in conn.listAllStoragePools(0):
        target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if target is not None and posixpath.normpath(target) == directory:
            return pool
    return None


def _pool_free(pool: Any) -> tuple[int | None, str | None]:
    """A pool's available bytes as of now, or why they cannot be had."""
    # A directory pool's figures are those of its last refresh; a read-only connection may
    # not refresh, and then the last figures are the best there is.
    with contextlib.suppress(libvirt.libvirtError):
        pool.refresh(0)
    try:
        state, _capacity, _allocation, available = pool.info()
    except libvirt.libvirtError as exc:
        return None, f"libvirt cannot read storage pool {pool.name()} ({exc.get_error_message()})"
    if state != libvirt.VIR_STORAGE_POOL_RUNNING:
        return None, f"storage pool {pool.name()} is not active (virsh pool-start {pool.name()})"
    return int(available), None


def measure_place(conn: Any, dom: Any, disk: Disk) -> Measured:
    """Where a snapshot of ``disk`` writes and the room there, through libvirt."""
    if disk.source_type == "network":
        where = f"network disk {disk.target}"
        return where, where, None, "a network disk's free space is not visible to libvirt"
    if disk.source_type == "block" and disk.path:
        # qcow2 inside a block device (LVM) grows up to the device's end: blockInfo's physical
        # size minus the highest offset in use is the room.
        where = f"block device {disk.path}"
        try:
            _cap, allocation, physical = dom.blockInfo(disk.target, 0)
        except libvirt.libvirtError as exc:
            return where, where, None, f"libvirt cannot measure it ({exc.get_error_message()})"
        return where, where, max(int(physical) - int(allocation), 0), None
    pool = _pool_of(conn, dom, disk)
    if pool is not None:
        name = pool.name()
        free, why = _pool_free(pool)
        return f"pool:{name}", f"storage pool {name}", free, why
    directory = posixpath.dirname(disk.path or "") or (disk.path or f"disk {disk.target}")
    return (
        f"dir:{directory}",
        directory,
        None,
        "no libvirt storage pool of this remote host holds it (a directory pool over "
        f"{directory} would make its free space known)",
    )


def allocation(conn: Any, dom: Any, disk: Disk) -> int | None:
    """Bytes ``disk``'s image occupies on its host, snapshots included; None if unknown."""
    try:
        return int(dom.blockInfo(disk.target, 0)[1])
    except libvirt.libvirtError:
        pass
    # The host's storage driver knows the volume's allocation even where the domain's block
    # info cannot tell (a disk libvirt cannot open for inspection).
    if not disk.path:
        return None
    try:
        return int(conn.storageVolLookupByPath(disk.path).info()[2])
    except libvirt.libvirtError:
        return None
