"""A ``DiskAccess`` over raw files, beside ``FakeHypervisor``: each fake VM's disk is a
sparse file, so service and front-end tests back up, restore and copy real bytes.

What it does not pretend: there is no guest, so "point in time" is whatever the file holds
while the view is open; an internal snapshot's disk state is the copy ``capture`` made when
the snapshot was taken (``FakeHypervisor.on_create`` calls ``capture``).
"""

from __future__ import annotations

import shutil
import uuid as uuidlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from core.adapters.backupstore.image_files import FileDiskReader, FileDiskWriter
from core.domain.backups import Consistency, DiskExport, RestoreTarget
from core.domain.vm import Vm, VmState
from core.errors import InvalidInput, OperationFailed
from tests.fakes.hypervisor import FakeHypervisor

DEFAULT_DISK_BYTES = 16 * 1024 * 1024


def fake_domain_xml(vm: Vm) -> str:
    return f"<domain type='qemu'><name>{vm.name}</name><uuid>{vm.uuid}</uuid></domain>"


class FakeDiskAccess:
    """Disks of ``hypervisor``'s VMs as files ``<root>/<uuid>-<target>.raw``."""

    def __init__(self, hypervisor: FakeHypervisor, root: Path, *, agent: bool = False) -> None:
        self.hv = hypervisor
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Whether the fake VMs' guest agents answer (a freeze is possible).
        self.agent = agent
        # Calls, for tests that check what was (not) touched.
        self.calls: list[tuple[str, str]] = []
        # domain XML each defined VM was made from (name -> xml)
        self.defined: dict[str, str] = {}
        hypervisor.on_create = self.capture
        # VMs (uuid) on which a backup job of snapbot's was left running.
        self.leftover_jobs: set[str] = set()

    def disk(self, vm_uuid: str, target: str = "vda") -> Path:
        path = self.root / f"{vm_uuid}-{target}.raw"
        if not path.exists():
            with path.open("wb") as out:
                out.truncate(DEFAULT_DISK_BYTES)
        return path

    def write(self, vm_uuid: str, offset: int, data: bytes, target: str = "vda") -> None:
        """What a guest writing to its disk would do."""
        with self.disk(vm_uuid, target).open("r+b") as out:
            out.seek(offset)
            out.write(data)

    def read(self, vm_uuid: str, offset: int, length: int, target: str = "vda") -> bytes:
        with self.disk(vm_uuid, target).open("rb") as source:
            source.seek(offset)
            return source.read(length)

    def capture(self, vm_uuid: str, libvirt_name: str) -> None:
        """Keep the disk as it is now as the internal snapshot ``libvirt_name``'s."""
        shutil.copyfile(self.disk(vm_uuid), self.root / f"{vm_uuid}-{libvirt_name}.snap")

    def _targets(self, vm: Vm) -> list[str]:
        return [d.target for d in self.hv.vms[vm.uuid].disks if not d.read_only]

    @asynccontextmanager
    async def backup_view(self, vm: Vm) -> AsyncIterator[DiskExport]:
        self.calls.append(("backup_view", vm.name))
        state = (await self.hv.get_vm_by_uuid(vm.uuid)).state
        if state is VmState.SHUT_OFF:
            consistency, note = Consistency.SHUT_OFF, ""
        elif self.agent:
            consistency, note = Consistency.FROZEN, ""
        else:
            consistency, note = Consistency.CRASH_CONSISTENT, "no guest agent answered"
        yield DiskExport(
            disks={t: FileDiskReader(self.disk(vm.uuid, t)) for t in self._targets(vm)},
            domain_xml=fake_domain_xml(vm),
            consistency=consistency,
            note=note,
        )

    @asynccontextmanager
    async def snapshot_view(self, vm: Vm, libvirt_name: str) -> AsyncIterator[DiskExport]:
        self.calls.append(("snapshot_view", vm.name))
        saved = self.root / f"{vm.uuid}-{libvirt_name}.snap"
        if not saved.exists():
            raise OperationFailed(f"no internal snapshot {libvirt_name} in the image", vm=vm.name)
        yield DiskExport(
            disks={"vda": FileDiskReader(saved)},
            domain_xml=fake_domain_xml(vm),
            consistency=Consistency.SNAPSHOT,
        )

    @asynccontextmanager
    async def restore_in_place(
        self, vm: Vm, sizes: Mapping[str, int]
    ) -> AsyncIterator[RestoreTarget]:
        self.calls.append(("restore_in_place", vm.name))
        state = (await self.hv.get_vm_by_uuid(vm.uuid)).state
        if state is not VmState.SHUT_OFF:
            raise OperationFailed(f"the VM is {state.value}, not shut off", vm=vm.name)
        unknown = sorted(set(sizes) - set(self._targets(vm)))
        if unknown:
            raise InvalidInput(f"{vm.name} has no disk {', '.join(unknown)}")
        files = {t: self.disk(vm.uuid, t).open("r+b") for t in sizes}
        try:
            for target, out in files.items():
                out.truncate(sizes[target])
            yield RestoreTarget(
                vm.name,
                vm.uuid,
                {t: FileDiskWriter(out, sizes[t], fresh=False) for t, out in files.items()},
                {t: str(self.disk(vm.uuid, t)) for t in sizes},
            )
        finally:
            for out in files.values():
                out.close()

    @asynccontextmanager
    async def restore_as_new(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        *,
        new_name: str | None,
        blobs: Mapping[str, bytes],
    ) -> AsyncIterator[RestoreTarget]:
        self.calls.append(("restore_as_new", new_name or "(original)"))
        name = new_name or _xml_value(domain_xml, "name")
        vm_uuid = str(uuidlib.uuid4()) if new_name else _xml_value(domain_xml, "uuid")
        if any(f.vm.name == name or f.vm.uuid == vm_uuid for f in self.hv.vms.values()):
            raise OperationFailed(f"a VM named {name} or with UUID {vm_uuid} exists", vm=name)
        paths = {t: self.root / f"{vm_uuid}-{t}.raw" for t in sizes}
        in_the_way = [str(p) for p in paths.values() if p.exists()]
        if in_the_way:
            raise OperationFailed(f"a file is in the way: {', '.join(in_the_way)}", vm=name)
        files = {t: paths[t].open("xb") for t in sizes}
        try:
            for target, out in files.items():
                out.truncate(sizes[target])
            yield RestoreTarget(
                name,
                vm_uuid,
                {t: FileDiskWriter(out, sizes[t], fresh=True) for t, out in files.items()},
                {t: str(p) for t, p in paths.items()},
            )
        except BaseException:
            for out in files.values():
                out.close()
            for path in paths.values():
                path.unlink(missing_ok=True)
            raise
        for out in files.values():
            out.close()
        self.hv.define(Vm(vm_uuid, name, VmState.SHUT_OFF, 256 * 1024 * 1024))
        self.defined[name] = domain_xml

    async def end_leftover_job(self, vm: Vm) -> bool | None:
        self.calls.append(("end_leftover_job", vm.name))
        if vm.uuid in self.leftover_jobs:
            self.leftover_jobs.discard(vm.uuid)
            return True
        return False


def _xml_value(xml: str, tag: str) -> str:
    start = xml.index(f"<{tag}>") + len(tag) + 2
    return xml[start : xml.index(f"</{tag}>", start)]
