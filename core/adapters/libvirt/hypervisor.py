"""``Hypervisor`` on libvirt: internal snapshots (disk, memory and configuration in the qcow2).

Each public method hops to the connection's pool once and does all its libvirt calls there.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import libvirt
import libvirt_qemu

from core.adapters.libvirt import storage
from core.adapters.libvirt.connection import LibvirtConnection, is_local_uri
from core.adapters.libvirt.xml import (
    host_uuid_of,
    parse_disks,
    parse_snapshot,
    snapshot_xml,
    uses_pflash,
    with_description,
)
from core.domain.hosts import HostIdentity, host_name_from_uri
from core.domain.snapshot import HypervisorSnapshot, is_encodable
from core.domain.vm import DiskFormat, StateCause, StoragePlace, Vm, VmFacts, VmState
from core.errors import VmNotFound

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VmState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmState.RUNNING,  # shutting down: still has a QEMU process
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: VmState.CRASHED,
}
_FROM_SNAPSHOT = StateCause.FROM_SNAPSHOT
_CAUSES = {
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT): _FROM_SNAPSHOT,
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_FROM_SNAPSHOT): _FROM_SNAPSHOT,
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT): _FROM_SNAPSHOT,
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER): StateCause.BY_USER,
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT): StateCause.SNAPSHOT_SAVE,
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR): StateCause.IO_ERROR,
}
QEMU_IMG_TIMEOUT = 30

# A monitor command that has run this long is someone's work (an internal snapshot being saved,
# loaded or deleted), not a query: a listing's or a stats poll's command ends in milliseconds.
OCCUPIED_BUSY_AFTER_MS = 1000
_CONTROL_POLL_SECONDS = 0.05


def control_busy(control_info: Callable[[], list[int]], sleep: Callable[[float], None]) -> bool:
    """Whether another client works on the domain, from libvirt's control state.

    JOB (an async job: a memory save, a dump, a migration) and ERROR answer at once. OCCUPIED
    means a monitor command is running, which every query does for a moment too (another
    snapbot request listing the same VM, virt-manager's stats): it counts as busy only once
    it has lasted ``OCCUPIED_BUSY_AFTER_MS``, so the answer takes at most about a second and a
    momentary query never refuses a snapshot as busy. Short commands one after another (no
    single one lasting that long) are queries too: after twice that time of them, not busy."""
    waited = 0.0
    while True:
        state, _details, since_ms = control_info()[:3]
        if state == libvirt.VIR_DOMAIN_CONTROL_OK:
            return False
        if state != libvirt.VIR_DOMAIN_CONTROL_OCCUPIED or since_ms >= OCCUPIED_BUSY_AFTER_MS:
            return True
        if waited >= 2 * OCCUPIED_BUSY_AFTER_MS / 1000:
            return False
        pause = min(_CONTROL_POLL_SECONDS, (OCCUPIED_BUSY_AFTER_MS - since_ms) / 1000)
        # blocking, on purpose: this runs in the libvirt pool's thread, never on the loop
        sleep(pause)
        waited += pause


_Measured = storage.Measured


def _image_snapshots(path: str) -> list[dict[str, Any]]:
    """The internal snapshots a qcow2 image holds, read while QEMU may have it open (-U only
    reads); none when it cannot be read."""
    try:
        out = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", path],
            capture_output=True,
            check=True,
            timeout=QEMU_IMG_TIMEOUT,
            text=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    snapshots = json.loads(out).get("snapshots", [])
    return [s for s in snapshots if isinstance(s, dict)]


def _vm_of(dom: Any) -> Vm:
    state, max_kib, _mem, _cpus, _cputime = dom.info()
    return Vm(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=_STATES.get(state, VmState.OTHER),
        memory_bytes=int(max_kib) * 1024,
    )


def _version_tuple(number: int) -> tuple[int, int, int]:
    return (number // 1_000_000, (number // 1000) % 1000, number % 1000)


class LibvirtHypervisor:
    """The production ``Hypervisor``."""

    def __init__(self, connection: LibvirtConnection, *, name: str | None = None) -> None:
        self._conn = connection
        self._host_uuid: str | None = None
        # The configured host's name (``[[hosts]]``), else the one ``LIBVIRT_URI`` implies.
        self.name = name or host_name_from_uri(connection.uri)

    @property
    def uri(self) -> str:
        return self._conn.uri

    async def host_of(self, vm: Vm) -> HostIdentity:
        return HostIdentity(self.name, self.uri, await self.host_uuid())

    async def hosts(self) -> list[HostIdentity]:
        return [HostIdentity(self.name, self.uri, await self.host_uuid())]

    async def host_uuid(self) -> str:
        if self._host_uuid is None:

            def call(conn: Any) -> str:
                found = host_uuid_of(conn.getCapabilities())
                if found:
                    return found
                # No SMBIOS UUID (libvirt's test driver, some containers): a stable stand-in
                # that still tells one hypervisor from another, never a demo from a real one.
                key = self.uri if self.uri.startswith("test:") else f"host:{conn.getHostname()}"
                return str(uuid.uuid5(uuid.NAMESPACE_URL, key))

            self._host_uuid = await self._conn.run(call, mutating=False)
        return self._host_uuid

    async def list_vms(self) -> list[Vm]:
        def call(conn: Any) -> list[Vm]:
            vms = []
            for dom in conn.listAllDomains(0):
                try:
                    vms.append(_vm_of(dom))
                except libvirt.libvirtError as exc:
                    # undefined between the listing and the info call
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return sorted(vms, key=lambda v: v.name)

        return await self._conn.run(call, mutating=False)

    async def get_vm(self, name: str) -> Vm:
        if not is_encodable(name):
            # A lone surrogate (a forged payload) cannot be a libvirt name: libvirt-python would
            # raise UnicodeEncodeError instead of an answer.
            raise VmNotFound(name)

        def call(conn: Any) -> Vm:
            try:
                return _vm_of(conn.lookupByName(name))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise VmNotFound(name) from exc
                raise

        return await self._conn.run(call, mutating=False, vm=name)

    async def get_vm_by_uuid(self, uuid: str) -> Vm:
        return await self._conn.run(
            lambda conn: _vm_of(conn.lookupByUUIDString(uuid)), mutating=False, vm=uuid
        )

    async def vm_facts(self, vm: Vm) -> VmFacts:
        def call(conn: Any) -> VmFacts:
            dom = conn.lookupByUUIDString(vm.uuid)
            xml = dom.XMLDesc(0)
            external = False
            for snap in dom.listAllSnapshots(0):
                if parse_snapshot(snap.getXMLDesc(0), is_current=False).is_external:
                    external = True
                    break
            try:
                checkpoints = len(dom.listAllCheckpoints(0)) > 0
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                ):
                    raise
                checkpoints = False
            return VmFacts(
                vm=_vm_of(dom),
                disks=parse_disks(xml),
                uses_pflash=uses_pflash(xml),
                has_external_snapshots=external,
                has_checkpoints=checkpoints,
                libvirt_version=_version_tuple(conn.getLibVersion()),
            )

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def snapshot_places(self, facts: VmFacts) -> list[StoragePlace]:
        # Every writable qcow2 disk receives its part of an internal snapshot (and one of them
        # the memory), so every one of their places is measured; none is skipped on error.
        disks = [d for d in facts.disks if not d.read_only and d.format is DiskFormat.QCOW2]
        local = is_local_uri(self.uri)

        def measure_files() -> dict[str, _Measured]:
            # disk target -> (place key, where, free bytes, why unknown); one key per filesystem
            found: dict[str, _Measured] = {}
            for disk in disks:
                if disk.source_type != "file" or not disk.path or not local:
                    continue
                directory = os.path.dirname(disk.path) or "/"
                try:
                    st = os.statvfs(directory)
                    dev = os.stat(directory).st_dev
                except OSError as exc:
                    why = f"cannot read it: {exc.strerror}"
                    found[disk.target] = (directory, directory, None, why)
                    continue
                found[disk.target] = (f"dev:{dev}", directory, st.f_bavail * st.f_frsize, None)
            return found

        files = await self._conn.run_blocking(measure_files)

        def measure_libvirt(conn: Any) -> dict[str, _Measured]:
            # The rest (remote hosts, block devices, pool volumes, network disks) is what the
            # host's libvirt can tell.
            dom = conn.lookupByUUIDString(facts.vm.uuid)
            return {
                disk.target: storage.measure_place(conn, dom, disk)
                for disk in disks
                if disk.target not in files
            }

        pooled = await self._conn.run(measure_libvirt, mutating=False, vm=facts.vm.name)
        grouped: dict[str, tuple[str, list[str], int | None, str | None]] = {}
        for target, (key, where, free, why) in {**files, **pooled}.items():
            if key in grouped:
                grouped[key][1].append(target)
            else:
                grouped[key] = (where, [target], free, why)
        return [
            StoragePlace(where=where, disks=tuple(ts), available_bytes=free, unknown_because=why)
            for where, ts, free, why in grouped.values()
        ]

    async def list_snapshots(self, vm: Vm) -> list[HypervisorSnapshot]:
        def call(conn: Any) -> list[HypervisorSnapshot]:
            dom = conn.lookupByUUIDString(vm.uuid)
            return [
                parse_snapshot(s.getXMLDesc(0), is_current=bool(s.isCurrent(0)))
                for s in dom.listAllSnapshots(0)
            ]

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def memory_state_sizes(self, vm: Vm) -> Mapping[str, int]:
        # Only qemu-img reading the image tells a saved memory state's size: libvirt shows it
        # in no snapshot XML, volume or block info. On a remote host they stay unknown (the
        # catalogue's memory_bytes None, which usage and prune previews report as such).
        if not is_local_uri(self.uri) or self.uri.startswith("test:"):
            return {}
        facts = await self.vm_facts(vm)
        paths = [
            d.path
            for d in facts.disks
            if not d.read_only and d.format is DiskFormat.QCOW2 and d.path
        ]

        def measure() -> dict[str, int]:
            sizes: dict[str, int] = {}
            for path in paths:
                for snap in _image_snapshots(path):
                    name = str(snap.get("name", ""))
                    sizes[name] = sizes.get(name, 0) + int(snap.get("vm-state-size", 0))
            return sizes

        return await self._conn.run_blocking(measure)

    async def discard_orphan(self, vm: Vm, libvirt_name: str) -> bool:
        # A snapshot whose libvirtd died while QEMU saved it is finished by QEMU in the qcow2
        # but never recorded by libvirt: space nobody sees. snapbot removes it only by the
        # generated name it chose itself, never another tag.
        if not is_local_uri(self.uri) or self.uri.startswith("test:"):
            return False
        facts = await self.vm_facts(vm)
        paths = [
            d.path
            for d in facts.disks
            if not d.read_only and d.format is DiskFormat.QCOW2 and d.path
        ]

        def holders() -> list[str]:
            return [
                path
                for path in paths
                if any(s.get("name") == libvirt_name for s in _image_snapshots(path))
            ]

        found = await self._conn.run_blocking(holders)
        if not found:
            return False
        if facts.vm.state.is_active:
            # QEMU has the image open: only QEMU may change it (HMP delvm, all its disks).
            command = f"delvm {libvirt_name}"

            def delvm(conn: Any) -> None:
                dom = conn.lookupByUUIDString(vm.uuid)
                libvirt_qemu.qemuMonitorCommand(
                    dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
                )

            await self._conn.run(delvm, mutating=True, vm=vm.name, snapshot=libvirt_name)
        else:

            def qemu_img_delete() -> None:
                for path in found:
                    subprocess.run(
                        ["qemu-img", "snapshot", "-d", libvirt_name, path],
                        capture_output=True,
                        check=True,
                        timeout=QEMU_IMG_TIMEOUT,
                    )

            await self._conn.run_blocking(qemu_img_delete)
        return not await self._conn.run_blocking(holders)

    async def disk_allocation(self, vm: Vm) -> int | None:
        # Through libvirt, never a stat of the image: the same on a remote host.
        def call(conn: Any) -> int | None:
            dom = conn.lookupByUUIDString(vm.uuid)
            total = 0
            for disk in parse_disks(dom.XMLDesc(0)):
                if disk.read_only or not (disk.path or disk.source_type == "volume"):
                    continue
                size = storage.allocation(conn, dom, disk)
                if size is None:
                    return None
                total += size
            return total

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def create_snapshot(
        self, vm: Vm, libvirt_name: str, description: str
    ) -> HypervisorSnapshot:
        def call(conn: Any) -> HypervisorSnapshot:
            dom = conn.lookupByUUIDString(vm.uuid)
            # flags 0 on a running domain = disk + memory + configuration, internal; the guest
            # is paused while its memory is saved and resumed by libvirt afterwards.
            snap = dom.snapshotCreateXML(
                snapshot_xml(libvirt_name, description),
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
            )
            return parse_snapshot(snap.getXMLDesc(0), is_current=True)

        def abort(conn: Any) -> None:
            # A memory save is an async job libvirt can abort; it then drops the half snapshot.
            conn.lookupByUUIDString(vm.uuid).abortJob()

        return await self._conn.run(
            call, mutating=True, vm=vm.name, snapshot=libvirt_name, abort=abort
        )

    async def revert_snapshot(self, vm: Vm, libvirt_name: str, *, paused: bool) -> None:
        def call(conn: Any) -> None:
            snap = conn.lookupByUUIDString(vm.uuid).snapshotLookupByName(libvirt_name, 0)
            # Never FORCE: a risky revert must be the operator's decision, not ours.
            dom_snap_flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED if paused else 0
            snap.getDomain().revertToSnapshot(snap, dom_snap_flags)

        await self._conn.run(call, mutating=True, vm=vm.name, snapshot=libvirt_name)

    async def delete_snapshot(self, vm: Vm, libvirt_name: str) -> None:
        def call(conn: Any) -> None:
            conn.lookupByUUIDString(vm.uuid).snapshotLookupByName(libvirt_name, 0).delete(0)

        await self._conn.run(call, mutating=True, vm=vm.name, snapshot=libvirt_name)

    async def set_snapshot_description(self, vm: Vm, libvirt_name: str, description: str) -> None:
        def call(conn: Any) -> None:
            dom = conn.lookupByUUIDString(vm.uuid)
            snap = dom.snapshotLookupByName(libvirt_name, 0)
            current = bool(snap.isCurrent(0))
            # REDEFINE with the same name replaces only the metadata; the qcow2 tag (what
            # revert uses) is untouched. SECURE keeps any secrets the XML carries.
            xml = with_description(
                snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE), description
            )
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if current:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            dom.snapshotCreateXML(xml, flags)

        await self._conn.run(call, mutating=True, vm=vm.name, snapshot=libvirt_name)

    async def job_active(self, vm: Vm) -> bool | None:
        def call(conn: Any) -> bool | None:
            dom = conn.lookupByUUIDString(vm.uuid)
            if not dom.isActive():
                return False  # no QEMU, no job libvirt can show (a shut-off revert uses qemu-img)
            try:
                # controlInfo takes no job lock, so it answers at once even while another
                # client holds the domain (jobInfo would queue behind a synchronous job).
                return control_busy(lambda: dom.controlInfo(0), time.sleep)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                    return False  # stopped meanwhile
                return None

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def state(self, vm: Vm) -> VmState:
        def call(conn: Any) -> VmState:
            state, _reason = conn.lookupByUUIDString(vm.uuid).state(0)
            return _STATES.get(state, VmState.OTHER)

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def state_cause(self, vm: Vm) -> StateCause:
        def call(conn: Any) -> StateCause:
            state, reason = conn.lookupByUUIDString(vm.uuid).state(0)
            return _CAUSES.get((state, reason), StateCause.OTHER)

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def stop(self, vm: Vm) -> None:
        await self._conn.run(
            lambda conn: conn.lookupByUUIDString(vm.uuid).destroy(), mutating=True, vm=vm.name
        )

    async def start(self, vm: Vm) -> None:
        await self._conn.run(
            lambda conn: conn.lookupByUUIDString(vm.uuid).create(), mutating=True, vm=vm.name
        )

    async def resume(self, vm: Vm) -> None:
        await self._conn.run(
            lambda conn: conn.lookupByUUIDString(vm.uuid).resume(), mutating=True, vm=vm.name
        )

    async def close(self) -> None:
        await self._conn.close()
