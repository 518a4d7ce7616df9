"""``Hypervisor`` on libvirt: internal snapshots (disk, memory and configuration in the qcow2).

Each public method hops to the connection's pool once and does all its libvirt calls there.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any

import libvirt

from core.adapters.libvirt.connection import LibvirtConnection, is_local_uri
from core.adapters.libvirt.xml import parse_disks, parse_snapshot, snapshot_xml, uses_pflash
from core.domain.snapshot import HypervisorSnapshot
from core.domain.vm import DiskFormat, FreeSpace, Vm, VmFacts, VmState
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
QEMU_IMG_TIMEOUT = 30


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

    def __init__(self, connection: LibvirtConnection) -> None:
        self._conn = connection

    @property
    def uri(self) -> str:
        return self._conn.uri

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

    async def free_space(self, facts: VmFacts) -> FreeSpace | None:
        # QEMU writes an internal snapshot's memory into the first writable qcow2 image.
        target = next(
            (d for d in facts.disks if not d.read_only and d.format is DiskFormat.QCOW2 and d.path),
            None,
        )
        if target is None or target.path is None:
            return None
        path = target.path
        if is_local_uri(self.uri):
            directory = os.path.dirname(path)

            def statvfs() -> FreeSpace | None:
                try:
                    st = os.statvfs(directory)
                except OSError:
                    return None
                return FreeSpace(path=directory, available_bytes=st.f_bavail * st.f_frsize)

            local = await self._conn.run_blocking(statvfs)
            if local is not None:
                return local

        def pool_space(conn: Any) -> FreeSpace | None:
            try:
                pool = conn.storageVolLookupByPath(path).storagePoolLookupByVolume()
                pool.refresh(0)
                return FreeSpace(path=f"storage pool {pool.name()}", available_bytes=pool.info()[3])
            except libvirt.libvirtError:
                return None

        return await self._conn.run(pool_space, mutating=False, vm=facts.vm.name)

    async def list_snapshots(self, vm: Vm) -> list[HypervisorSnapshot]:
        def call(conn: Any) -> list[HypervisorSnapshot]:
            dom = conn.lookupByUUIDString(vm.uuid)
            return [
                parse_snapshot(s.getXMLDesc(0), is_current=bool(s.isCurrent(0)))
                for s in dom.listAllSnapshots(0)
            ]

        return await self._conn.run(call, mutating=False, vm=vm.name)

    async def memory_state_sizes(self, vm: Vm) -> Mapping[str, int]:
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
                # -U (force share) reads the image while QEMU has it open; it only reads.
                try:
                    out = subprocess.run(
                        ["qemu-img", "info", "-U", "--output=json", path],
                        capture_output=True,
                        check=True,
                        timeout=QEMU_IMG_TIMEOUT,
                        text=True,
                    ).stdout
                except (OSError, subprocess.SubprocessError):
                    continue
                for snap in json.loads(out).get("snapshots", []):
                    name = str(snap.get("name", ""))
                    sizes[name] = sizes.get(name, 0) + int(snap.get("vm-state-size", 0))
            return sizes

        return await self._conn.run_blocking(measure)

    async def disk_allocation(self, vm: Vm) -> int | None:
        def call(conn: Any) -> int | None:
            dom = conn.lookupByUUIDString(vm.uuid)
            total = 0
            for disk in parse_disks(dom.XMLDesc(0)):
                if disk.read_only or not disk.path:
                    continue
                try:
                    total += int(dom.blockInfo(disk.path, 0)[1])
                except libvirt.libvirtError:
                    return None
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

        return await self._conn.run(call, mutating=True, vm=vm.name, snapshot=libvirt_name)

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

    async def state(self, vm: Vm) -> VmState:
        def call(conn: Any) -> VmState:
            state, _reason = conn.lookupByUUIDString(vm.uuid).state(0)
            return _STATES.get(state, VmState.OTHER)

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
