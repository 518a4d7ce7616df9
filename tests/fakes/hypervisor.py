"""An in-memory ``Hypervisor`` with fault injection, for service tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from core.domain.hosts import HostIdentity
from core.domain.snapshot import CapturedState, HypervisorSnapshot
from core.domain.vm import Disk, DiskFormat, StateCause, StoragePlace, Vm, VmFacts, VmState
from core.errors import CoreError, HypervisorUnavailable, SnapshotNotFound, VmNotFound


@dataclass
class FakeVm:
    vm: Vm
    disks: tuple[Disk, ...] = (
        Disk("vda", "/var/lib/fake/disk.qcow2", DiskFormat.QCOW2, "qcow2", False),
    )
    snapshots: dict[str, HypervisorSnapshot] = field(default_factory=dict)
    uses_pflash: bool = False
    disk_bytes: int = 10 * 1024 * 1024


class FakeHypervisor:
    """Keeps VMs and snapshots in memory. ``fail[method]`` raises once; ``delay`` slows
    mutations so tests can overlap them; ``calls`` records every mutating call."""

    def __init__(
        self,
        *vms: Vm,
        free_bytes: int = 100 * 2**30,
        host_uuid: str = "fa4e0000-0000-4000-8000-000000000001",
        uri: str = "fake:///",
        name: str = "local",
    ) -> None:
        self.vms = {v.uuid: FakeVm(v) for v in vms}
        self.name = name
        self._uri = uri
        # Set to an error: every call raises it (the host is down, its daemon stopped).
        self.down: CoreError | None = None
        self.free_bytes = free_bytes
        # Set to a reason: the VM's snapshot space cannot be known (a network disk).
        self.space_unknown: str | None = None
        # VMs with a libvirt job running (someone else's virsh dump, a migration).
        self.jobs: set[str] = set()
        self.host = host_uuid
        self.after_create: Callable[[], Awaitable[None]] | None = None
        self.causes: dict[str, StateCause] = {}
        # Mutating methods whose change happens but whose answer is lost.
        self.lose_answer: set[str] = set()
        # (vm uuid, name) of snapshots an image holds without libvirt's record
        self.orphans: dict[tuple[str, str], bool] = {}
        self.fail: dict[str, CoreError] = {}
        self.state_after_failure: dict[str, VmState] = {}
        self.delay = 0.0
        self.calls: list[tuple[str, str]] = []
        # Told of every snapshot made (vm uuid, libvirt name): a fake disk keeps its content.
        self.on_create: Callable[[str, str], None] | None = None
        self._clock = 1_700_000_000

    def define(self, vm: Vm) -> None:
        """A VM defined anew (a restore from the backup store)."""
        self.vms[vm.uuid] = FakeVm(vm)

    @property
    def uri(self) -> str:
        return self._uri

    def _answer(self) -> None:
        if self.down is not None:
            raise self.down

    def _vm(self, uuid: str) -> FakeVm:
        self._answer()
        if uuid not in self.vms:
            raise VmNotFound(uuid)
        return self.vms[uuid]

    def _set_state(self, uuid: str, state: VmState, cause: StateCause = StateCause.OTHER) -> None:
        fv = self._vm(uuid)
        fv.vm = replace(fv.vm, state=state)
        self.causes[uuid] = cause

    def _maybe_lose_answer(self, method: str) -> None:
        # The change happened in libvirt; only its answer never reached snapbot (a daemon
        # restart between the two).
        if method in self.lose_answer:
            self.lose_answer.discard(method)
            raise HypervisorUnavailable("Cannot recv data: Connection reset by peer")

    async def _mutate(self, method: str, uuid: str) -> None:
        self._answer()
        self.calls.append((method, uuid))
        if self.delay:
            await asyncio.sleep(self.delay)
        if method in self.fail:
            if method in self.state_after_failure:
                self._set_state(uuid, self.state_after_failure.pop(method))
            raise self.fail.pop(method)

    async def list_vms(self) -> list[Vm]:
        self._answer()
        return sorted((f.vm for f in self.vms.values()), key=lambda v: v.name)

    async def get_vm(self, name: str) -> Vm:
        self._answer()
        for f in self.vms.values():
            if f.vm.name == name:
                return f.vm
        raise VmNotFound(name)

    async def get_vm_by_uuid(self, uuid: str) -> Vm:
        return self._vm(uuid).vm

    async def vm_facts(self, vm: Vm) -> VmFacts:
        f = self._vm(vm.uuid)
        return VmFacts(f.vm, f.disks, f.uses_pflash, False, False, (9, 0, 0))

    async def host_uuid(self) -> str:
        self._answer()
        return self.host

    async def host_of(self, vm: Vm) -> HostIdentity:
        return HostIdentity(self.name, self.uri, await self.host_uuid())

    async def hosts(self) -> list[HostIdentity]:
        return [HostIdentity(self.name, self.uri, await self.host_uuid())]

    async def snapshot_places(self, facts: VmFacts) -> list[StoragePlace]:
        self._answer()
        disks = tuple(d.target for d in facts.disks if not d.read_only)
        if self.space_unknown:
            return [StoragePlace("network disk vda", disks, None, self.space_unknown)]
        return [StoragePlace("/var/lib/fake", disks, self.free_bytes)]

    async def set_snapshot_description(self, vm: Vm, libvirt_name: str, description: str) -> None:
        await self._mutate("set_snapshot_description", vm.uuid)
        f = self._vm(vm.uuid)
        f.snapshots[libvirt_name] = replace(f.snapshots[libvirt_name], description=description)

    async def discard_orphan(self, vm: Vm, libvirt_name: str) -> bool:
        self._answer()
        return self.orphans.pop((vm.uuid, libvirt_name), False)

    async def job_active(self, vm: Vm) -> bool | None:
        self._answer()
        return vm.uuid in self.jobs

    async def list_snapshots(self, vm: Vm) -> list[HypervisorSnapshot]:
        return list(self._vm(vm.uuid).snapshots.values())

    async def memory_state_sizes(self, vm: Vm) -> Mapping[str, int]:
        f = self._vm(vm.uuid)
        return {n: f.vm.memory_bytes // 2 for n, s in f.snapshots.items() if s.has_memory}

    async def disk_allocation(self, vm: Vm) -> int | None:
        return self._vm(vm.uuid).disk_bytes

    async def create_snapshot(
        self, vm: Vm, libvirt_name: str, description: str
    ) -> HypervisorSnapshot:
        await self._mutate("create_snapshot", vm.uuid)
        f = self._vm(vm.uuid)
        running = f.vm.state.is_active
        self._clock += 60
        for name, s in f.snapshots.items():
            f.snapshots[name] = replace(s, is_current=False)
        snap = HypervisorSnapshot(
            libvirt_name=libvirt_name,
            created_at=datetime.fromtimestamp(self._clock, UTC),
            captured_state=CapturedState.RUNNING if running else CapturedState.SHUT_OFF,
            has_memory=running,
            description=description,
            parent=None,
            is_current=True,
            is_external=False,
        )
        f.snapshots[libvirt_name] = snap
        f.disk_bytes += 1024 * 1024
        if self.on_create is not None:
            self.on_create(vm.uuid, libvirt_name)
        # The snapshot exists in libvirt, the call has not returned yet: a test can interleave
        # another request exactly here.
        if self.after_create is not None:
            await self.after_create()
        self._maybe_lose_answer("create_snapshot")
        return snap

    async def revert_snapshot(self, vm: Vm, libvirt_name: str, *, paused: bool) -> None:
        await self._mutate("revert_snapshot", vm.uuid)
        f = self._vm(vm.uuid)
        if libvirt_name not in f.snapshots:
            raise SnapshotNotFound(vm.name, libvirt_name)
        snap = f.snapshots[libvirt_name]
        # libvirt makes the snapshot reverted to the current one
        for name, s in f.snapshots.items():
            f.snapshots[name] = replace(s, is_current=name == libvirt_name)
        if snap.has_memory:
            state = VmState.PAUSED if paused else VmState.RUNNING
            self._set_state(vm.uuid, state, StateCause.FROM_SNAPSHOT)
        else:
            self._set_state(vm.uuid, VmState.SHUT_OFF, StateCause.FROM_SNAPSHOT)
        self._maybe_lose_answer("revert_snapshot")

    async def delete_snapshot(self, vm: Vm, libvirt_name: str) -> None:
        await self._mutate("delete_snapshot", vm.uuid)
        f = self._vm(vm.uuid)
        if libvirt_name not in f.snapshots:
            raise SnapshotNotFound(vm.name, libvirt_name)
        del f.snapshots[libvirt_name]
        f.disk_bytes -= 1024 * 1024

    async def state(self, vm: Vm) -> VmState:
        return self._vm(vm.uuid).vm.state

    async def state_cause(self, vm: Vm) -> StateCause:
        self._answer()
        return self.causes.get(vm.uuid, StateCause.OTHER)

    async def stop(self, vm: Vm) -> None:
        await self._mutate("stop", vm.uuid)
        self._set_state(vm.uuid, VmState.SHUT_OFF)

    async def start(self, vm: Vm) -> None:
        await self._mutate("start", vm.uuid)
        self._set_state(vm.uuid, VmState.RUNNING)

    async def resume(self, vm: Vm) -> None:
        await self._mutate("resume", vm.uuid)
        self._set_state(vm.uuid, VmState.RUNNING)

    async def close(self) -> None:
        return None
