"""Several libvirt hosts behind the one ``Hypervisor`` port the services use.

Each configured host keeps its own connection, its own ``HypervisorWatch`` (reconnect with
backoff, health) and its own ``Reconciler``: a host that is down is refused as unreachable
while every other host keeps working, and a host that comes back is reconciled before any
request reaches it. The ``Fleet`` routes each call to the VM's host: by ``Vm.host`` (stamped on
every VM it hands out), else by the UUID→host map its listings keep, else by asking each
reachable host. A VM is named ``web-01`` when that name is unique across hosts, else
``hv1/web-01`` (``VmAmbiguous`` names the candidates).

The same hypervisor reached by two configured URIs reports the same host UUID: the name
configured later (or, at run time, the one identified second) becomes an alias of the other.
It is never listed, reconciled or reached on its own; ``alias/web-01`` means the other host's
``web-01``, and its health says whose alias it is.

Each host runs at most ``max_operations`` snapbot operations at once (``Fleet.slot``, taken by
``OperationRunner`` before the VM's lock): one waiting longer than ``slot_wait`` seconds is
refused with ``HostBusy``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

from core.domain.backups import DiskExport, RestoreTarget
from core.domain.hosts import (
    HostConfig,
    HostHealth,
    HostIdentity,
    qualified,
    split_vm_ref,
    unreachable,
)
from core.domain.operation import Operation
from core.domain.snapshot import HypervisorSnapshot
from core.domain.vm import StateCause, StoragePlace, Vm, VmFacts, VmState
from core.errors import (
    CoreError,
    HostBusy,
    HypervisorTimeout,
    HypervisorUnavailable,
    InvalidInput,
    VmAmbiguous,
    VmNotFound,
)
from core.ports import DiskAccess, HostHypervisor
from core.services.availability import BACKOFF, TAKEOVER_INTERVAL, HypervisorWatch
from core.services.reconcile import Reconciler

__all__ = ["SLOT_WAIT", "Fleet", "FleetWatch", "HostMember", "Owns"]

logger = logging.getLogger(__name__)

# How long an operation waits for one of its host's slots before it is refused as busy.
SLOT_WAIT = 600.0

T = TypeVar("T")
Owns = Callable[[Operation], Awaitable[bool]]
ReconciledListener = Callable[[Sequence[Operation]], Awaitable[None]]


@dataclass(eq=False)
class HostMember:
    """One configured host: its hypervisor, watch and reconciler, and its operation slots."""

    config: HostConfig
    hypervisor: HostHypervisor
    watch: HypervisorWatch
    reconciler: Reconciler
    slots: asyncio.Semaphore
    running: int = 0
    order: int = 0
    vm_uuids: set[str] = field(default_factory=set)
    # VM names as last seen here: a host that is down still makes a name it had ambiguous
    vm_names: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.config.name


async def _host_uuid(hv: HostHypervisor) -> str:
    return await hv.host_uuid()


class Fleet:
    """The ``Hypervisor`` of the services when snapbot serves several hosts. Build it, then
    ``add_host`` each configured host in order; ``watch`` (a ``FleetWatch``) reaches them."""

    def __init__(self, *, slot_wait: float = SLOT_WAIT) -> None:
        self._members: dict[str, HostMember] = {}
        self._slot_wait = slot_wait
        # VM UUID -> host name, from the last listings and lookups
        self._where: dict[str, str] = {}
        self.watch = FleetWatch(self)

    # --- building ---------------------------------------------------------------------------

    def add_host(
        self,
        config: HostConfig,
        hypervisor: HostHypervisor,
        reconciler_for: Callable[[Owns], Reconciler],
        *,
        backoff: Sequence[float] = BACKOFF,
        takeover_interval: float = TAKEOVER_INTERVAL,
    ) -> HostMember:
        """Add a configured host. ``reconciler_for`` builds its reconciler from the predicate
        that says which interrupted operations are this host's to finish."""
        if config.name in self._members:
            raise InvalidInput(f"host name {config.name!r} is configured twice")
        name = config.name
        reconciler = reconciler_for(lambda op: self._owns(name, op))
        watch = HypervisorWatch(
            hypervisor,
            reconciler,
            backoff=backoff,
            takeover_interval=takeover_interval,
            name=name,
            identified=lambda uuid: self._identified(name, uuid),
        )
        member = HostMember(
            config,
            hypervisor,
            watch,
            reconciler,
            asyncio.Semaphore(config.max_operations),
            order=len(self._members),
        )
        self._members[name] = member
        return member

    @property
    def members(self) -> list[HostMember]:
        return list(self._members.values())

    # --- which host ---------------------------------------------------------------------------

    def _identified(self, name: str, uuid: str) -> str | None:
        """The host ``name`` answered with ``uuid``: the name of another configured host that
        is the same hypervisor (this one then becomes its alias), or None."""
        for other in self._members.values():
            if (
                other.name != name
                and other.watch.alias_of is None
                and other.watch.host_uuid == uuid
            ):
                return other.name
        return None

    def _primary(self, name: str) -> HostMember:
        member = self._members.get(name)
        if member is None:
            raise InvalidInput(f"no host named {name!r}; the hosts are {', '.join(self._members)}")
        while member.watch.alias_of is not None:
            member = self._members[member.watch.alias_of]
        return member

    def _ready(self) -> list[HostMember]:
        return [
            m for m in self._members.values() if m.watch.alias_of is None and m.watch.ready.is_set()
        ]

    async def _call(self, member: HostMember, call: Callable[[HostHypervisor], Awaitable[T]]) -> T:
        """One call on the host; a host that stops answering is marked unreachable (its watch
        reconnects and reconciles before it is used again)."""
        member.watch.check()
        try:
            return await call(member.hypervisor)
        except HypervisorTimeout:
            raise  # one call past its deadline: the host itself may be fine
        except HypervisorUnavailable as exc:
            member.watch.lost(exc.detail)
            raise

    def _stamp(self, member: HostMember, vm: Vm) -> Vm:
        self._where[vm.uuid] = member.name
        member.vm_uuids.add(vm.uuid)
        member.vm_names.add(vm.name)
        return replace(vm, host=member.name)

    async def _member_of(self, vm: Vm) -> HostMember:
        if vm.host is not None:
            return self._primary(vm.host)
        known = self._where.get(vm.uuid)
        if known is not None:
            return self._primary(known)
        return (await self._find_uuid(vm.uuid, vm.name))[0]

    async def _find_uuid(self, uuid: str, label: str) -> tuple[HostMember, Vm]:
        known = self._where.get(uuid)
        if known is not None:
            member = self._primary(known)
            try:
                return member, self._stamp(
                    member, await self._call(member, lambda hv: hv.get_vm_by_uuid(uuid))
                )
            except VmNotFound:
                self._where.pop(uuid, None)  # moved, or undefined: look everywhere
        for member in self._ready():
            try:
                return member, self._stamp(
                    member, await self._call(member, lambda hv: hv.get_vm_by_uuid(uuid))
                )
            except (VmNotFound, HypervisorUnavailable):
                continue
        raise VmNotFound(label)

    def host_name_of(self, vm_uuid: str) -> str | None:
        """The host a VM was last seen on (None: not seen yet)."""
        return self._where.get(vm_uuid)

    # --- the Hypervisor port ------------------------------------------------------------------

    async def list_vms(self) -> list[Vm]:
        """Every VM of every reachable host, each with its host; ``HypervisorUnavailable``
        only when no host answers. ``health()`` says which hosts are missing and why."""
        ready = self._ready()

        async def one(member: HostMember) -> list[Vm] | None:
            try:
                vms = await self._call(member, lambda hv: hv.list_vms())
            except HypervisorUnavailable:
                return None
            member.vm_uuids, member.vm_names = set(), set()
            return [self._stamp(member, vm) for vm in vms]

        listings = await asyncio.gather(*(one(m) for m in ready))
        if not any(listing is not None for listing in listings):
            raise HypervisorUnavailable(self._none_answer())
        found = [vm for listing in listings if listing is not None for vm in listing]
        return sorted(found, key=lambda v: (v.name, v.host or ""))

    def _none_answer(self) -> str:
        down = unreachable(self.watch.health())
        return "no hypervisor host answers: " + "; ".join(
            f"{h.name} ({h.uri}): {h.last_error or 'not reached yet'}" for h in down
        )

    async def get_vm(self, name: str) -> Vm:
        ref = split_vm_ref(name)
        if ref.host is not None:
            member = self._primary(ref.host)
            vm = await self._call(member, lambda hv: hv.get_vm(ref.name))
            return self._stamp(member, vm)
        ready = self._ready()

        async def one(member: HostMember) -> Vm | None:
            try:
                return self._stamp(member, await self._call(member, lambda hv: hv.get_vm(name)))
            except (VmNotFound, HypervisorUnavailable):
                return None

        found = [vm for vm in await asyncio.gather(*(one(m) for m in ready)) if vm is not None]
        # A host that does not answer now but had a VM of that name: acting on the one that
        # answers could be acting on the wrong VM.
        unseen = [
            m.name
            for m in self._members.values()
            if m not in ready and m.watch.alias_of is None and name in m.vm_names
        ]
        if len(found) + len(unseen) > 1:
            raise VmAmbiguous(
                name,
                sorted([qualified(vm.host, vm.name) for vm in found])
                + [qualified(host, name) for host in unseen],
            )
        if found:
            return found[0]
        down = unreachable(self.watch.health())
        if down:
            raise HypervisorUnavailable(
                f"no reachable host has a VM named {name!r}, and "
                + ", ".join(f"host {h.name} ({h.last_error or 'not reached yet'})" for h in down)
                + " cannot be asked: it may be there"
            )
        raise VmNotFound(name)

    async def get_vm_by_uuid(self, uuid: str) -> Vm:
        return (await self._find_uuid(uuid, uuid))[1]

    async def host_of(self, vm: Vm) -> HostIdentity:
        member = await self._member_of(vm)
        known = member.watch.host_uuid
        host_uuid = known if known is not None else await self._call(member, _host_uuid)
        return HostIdentity(member.name, member.hypervisor.uri, host_uuid)

    async def hosts(self) -> list[HostIdentity]:
        return [
            HostIdentity(m.name, m.hypervisor.uri, uuid)
            for m in self._ready()
            if (uuid := m.watch.host_uuid) is not None
        ]

    async def _on(self, vm: Vm, call: Callable[[HostHypervisor], Awaitable[T]]) -> T:
        return await self._call(await self._member_of(vm), call)

    async def vm_facts(self, vm: Vm) -> VmFacts:
        facts = await self._on(vm, lambda hv: hv.vm_facts(vm))
        return replace(facts, vm=replace(facts.vm, host=(await self._member_of(vm)).name))

    async def snapshot_places(self, facts: VmFacts) -> list[StoragePlace]:
        return await self._on(facts.vm, lambda hv: hv.snapshot_places(facts))

    async def list_snapshots(self, vm: Vm) -> list[HypervisorSnapshot]:
        return await self._on(vm, lambda hv: hv.list_snapshots(vm))

    async def memory_state_sizes(self, vm: Vm) -> Mapping[str, int]:
        return await self._on(vm, lambda hv: hv.memory_state_sizes(vm))

    async def disk_allocation(self, vm: Vm) -> int | None:
        return await self._on(vm, lambda hv: hv.disk_allocation(vm))

    async def create_snapshot(
        self, vm: Vm, libvirt_name: str, description: str
    ) -> HypervisorSnapshot:
        return await self._on(vm, lambda hv: hv.create_snapshot(vm, libvirt_name, description))

    async def revert_snapshot(self, vm: Vm, libvirt_name: str, *, paused: bool) -> None:
        await self._on(vm, lambda hv: hv.revert_snapshot(vm, libvirt_name, paused=paused))

    async def delete_snapshot(self, vm: Vm, libvirt_name: str) -> None:
        await self._on(vm, lambda hv: hv.delete_snapshot(vm, libvirt_name))

    async def set_snapshot_description(self, vm: Vm, libvirt_name: str, description: str) -> None:
        await self._on(vm, lambda hv: hv.set_snapshot_description(vm, libvirt_name, description))

    async def discard_orphan(self, vm: Vm, libvirt_name: str) -> bool:
        return await self._on(vm, lambda hv: hv.discard_orphan(vm, libvirt_name))

    async def job_active(self, vm: Vm) -> bool | None:
        return await self._on(vm, lambda hv: hv.job_active(vm))

    async def state(self, vm: Vm) -> VmState:
        return await self._on(vm, lambda hv: hv.state(vm))

    async def state_cause(self, vm: Vm) -> StateCause:
        return await self._on(vm, lambda hv: hv.state_cause(vm))

    async def stop(self, vm: Vm) -> None:
        await self._on(vm, lambda hv: hv.stop(vm))

    async def start(self, vm: Vm) -> None:
        await self._on(vm, lambda hv: hv.start(vm))

    async def resume(self, vm: Vm) -> None:
        await self._on(vm, lambda hv: hv.resume(vm))

    async def close(self) -> None:
        for member in self._members.values():
            try:
                await member.hypervisor.close()
            except CoreError:
                logger.exception("closing host %s failed", member.name)

    # --- per-host limit -----------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, vm: Vm) -> AsyncIterator[None]:
        """Hold one of the VM's host's operation slots for the block; ``HostBusy`` when none
        frees within ``slot_wait`` seconds."""
        member = await self._member_of(vm)
        try:
            await asyncio.wait_for(member.slots.acquire(), self._slot_wait)
        except TimeoutError:
            raise HostBusy(
                member.name, vm.name, member.config.max_operations, self._slot_wait
            ) from None
        member.running += 1
        try:
            yield
        finally:
            member.running -= 1
            member.slots.release()

    # --- reconciliation per host --------------------------------------------------------------

    async def _owns(self, name: str, op: Operation) -> bool:
        """Whether host ``name``'s reconciler finishes ``op``: it ran there (the host UUID its
        details recorded), or it recorded no host and its VM is there. An operation whose
        host no configured host is goes to the first host once every host has been
        identified: it is finished as "ran on another hypervisor" instead of staying locked."""
        member = self._members[name]
        if member.watch.alias_of is not None or member.watch.host_uuid is None:
            return False
        recorded = op.details.get("host_uuid")
        if isinstance(recorded, str) and recorded:
            if recorded == member.watch.host_uuid:
                return True
            known = {m.watch.host_uuid for m in self._members.values()}
            return self._is_first(member) and None not in known and recorded not in known
        try:
            await member.hypervisor.get_vm_by_uuid(op.vm_uuid)
            return True
        except VmNotFound:
            pass
        if not self._is_first(member):
            return False
        for other in self._members.values():
            if other is member or other.watch.alias_of is not None:
                continue
            if not other.watch.ready.is_set():
                return False  # it may be there: wait until that host answers
            try:
                await other.hypervisor.get_vm_by_uuid(op.vm_uuid)
                return False
            except VmNotFound:
                continue
            except HypervisorUnavailable:
                return False
        return True

    def _is_first(self, member: HostMember) -> bool:
        primaries = [m for m in self._members.values() if m.watch.alias_of is None]
        return bool(primaries) and primaries[0] is member

    async def reconcile_one(self, op: Operation) -> str:
        """An admin's unlock: the operation's outcome judged by its own host's reconciler."""
        recorded = op.details.get("host_uuid")
        for member in self._members.values():
            if member.watch.alias_of is None and member.watch.host_uuid == recorded:
                member.watch.check()
                return await member.reconciler.reconcile_one(op)
        member, _ = await self._find_uuid(op.vm_uuid, op.vm_name)
        return await member.reconciler.reconcile_one(op)


class FleetWatch:
    """Reaches every host of a ``Fleet`` (each by its own ``HypervisorWatch``): the
    ``Core.watch`` where snapbot serves several hosts."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    @property
    def uri(self) -> str:
        return ", ".join(f"{m.name}={m.hypervisor.uri}" for m in self._fleet.members)

    def health(self) -> list[HostHealth]:
        """Every configured host, in configured order, with its reachability, last error,
        alias and operations running against its limit."""
        return [
            replace(
                m.watch.host_health(),
                operations=m.running,
                max_operations=m.config.max_operations,
            )
            for m in self._fleet.members
        ]

    def unreachable(self) -> list[HostHealth]:
        return unreachable(self.health())

    async def on_reconciled(self, listener: ReconciledListener) -> None:
        for member in self._fleet.members:
            await member.watch.on_reconciled(listener)

    async def connect_once(self) -> bool:
        """Reach every host once. Their UUIDs are read first, all at once, so that the same
        hypervisor configured twice is settled in configured order (the later name becomes
        the alias); then each host is reconciled, in parallel. True when all are ready."""
        members = self._fleet.members

        async def identify(member: HostMember) -> str | None:
            try:
                return await member.hypervisor.host_uuid()
            except CoreError:
                return None

        uuids = await asyncio.gather(*(identify(m) for m in members))
        first: dict[str, str] = {}
        for member, uuid in zip(members, uuids, strict=True):
            if uuid is None:
                continue
            if uuid in first:
                member.watch.alias_of = first[uuid]
                member.watch.host_uuid = uuid
                member.watch.last_error = (
                    f"the same hypervisor as host {first[uuid]} (host UUID {uuid}): "
                    f"{member.name} is an alias of {first[uuid]}"
                )
                logger.warning("%s", member.watch.last_error)
            else:
                first[uuid] = member.name
                # claimed now, so that a host identified later is compared with it
                member.watch.host_uuid = uuid
        results = await asyncio.gather(
            *(m.watch.connect_once() for m in members if m.watch.alias_of is None)
        )
        return all(results)

    async def run(self) -> None:
        await asyncio.gather(*(self._keep_watching(m) for m in self._fleet.members))

    @staticmethod
    async def _keep_watching(member: HostMember) -> None:
        """One host's watch, started again should it fail on something unforeseen: a host
        that stops being watched would stay unreachable (or unchecked) for good."""
        while True:
            try:
                await member.watch.run()
                return  # an alias: nothing to watch
            except CoreError:
                logger.exception("watching host %s failed; starting again", member.name)
            await asyncio.sleep(BACKOFF[-1])

    async def take_over_stale_locks(self) -> list[Operation]:
        finished: list[Operation] = []
        for member in self._fleet.members:
            if member.watch.alias_of is None and member.watch.ready.is_set():
                finished.extend(await member.watch.take_over_stale_locks())
        return finished


class HostRoutedDisks:
    """``DiskAccess`` for several hosts: a VM's disks are read and written through its own
    host's disk access (which says plainly when that host is not this machine); a VM defined
    anew from the backup store goes to ``home``, the host snapbot runs on, the only one whose
    images it can write."""

    def __init__(self, fleet: Fleet, by_host: Mapping[str, DiskAccess], home: str) -> None:
        self._fleet = fleet
        self._by_host = dict(by_host)
        self._home = home

    async def _for(self, vm: Vm) -> DiskAccess:
        identity = await self._fleet.host_of(vm)
        return self._by_host[identity.name]

    @asynccontextmanager
    async def backup_view(self, vm: Vm) -> AsyncIterator[DiskExport]:
        async with (await self._for(vm)).backup_view(vm) as export:
            yield export

    @asynccontextmanager
    async def snapshot_view(self, vm: Vm, libvirt_name: str) -> AsyncIterator[DiskExport]:
        async with (await self._for(vm)).snapshot_view(vm, libvirt_name) as export:
            yield export

    @asynccontextmanager
    async def restore_in_place(
        self, vm: Vm, sizes: Mapping[str, int]
    ) -> AsyncIterator[RestoreTarget]:
        async with (await self._for(vm)).restore_in_place(vm, sizes) as target:
            yield target

    @asynccontextmanager
    async def restore_as_new(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        *,
        new_name: str | None,
        blobs: Mapping[str, bytes],
    ) -> AsyncIterator[RestoreTarget]:
        home = self._by_host[self._home]
        async with home.restore_as_new(domain_xml, sizes, new_name=new_name, blobs=blobs) as target:
            yield target

    async def end_leftover_job(self, vm: Vm) -> bool | None:
        return await (await self._for(vm)).end_leftover_job(vm)
