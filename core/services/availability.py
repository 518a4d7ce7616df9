"""Whether the configured hypervisor answers, and what snapbot does until it does.

snapbot never swaps the configured hypervisor for another one: until it answers, every request
is told "unreachable" (``GatedHypervisor``), and ``HypervisorWatch`` keeps trying with backoff.
Only once it answers are interrupted operations reconciled and the catalogue synced, against
that hypervisor and no other. While running, the watch also takes over locks whose owner died
(another replica, a killed process): their heartbeats went stale by the database's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from core.domain.hosts import HostHealth, HostIdentity, host_name_from_uri, unreachable
from core.domain.operation import Operation
from core.domain.snapshot import HypervisorSnapshot
from core.domain.vm import StateCause, StoragePlace, Vm, VmFacts, VmState
from core.errors import CoreError, HypervisorError, HypervisorUnavailable
from core.ports import HostHypervisor
from core.services.reconcile import Reconciler

logger = logging.getLogger(__name__)

# Seconds between attempts to reach an unreachable hypervisor; the last repeats.
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
# How often a running snapbot looks for locks whose owner died.
TAKEOVER_INTERVAL = 30.0

ReconciledListener = Callable[[Sequence[Operation]], Awaitable[None]]


class HypervisorWatch:
    """Reaches the configured hypervisor, reconciles once it answers, then takes over stale
    locks every ``takeover_interval`` seconds. ``run`` is a background task."""

    def __init__(
        self,
        hypervisor: HostHypervisor,
        reconciler: Reconciler,
        *,
        backoff: Sequence[float] = BACKOFF,
        takeover_interval: float = TAKEOVER_INTERVAL,
        name: str | None = None,
        identified: Callable[[str], str | None] | None = None,
    ) -> None:
        self._hv = hypervisor
        self._reconciler = reconciler
        self._backoff = tuple(backoff)
        self._takeover_interval = takeover_interval
        self.ready = asyncio.Event()
        self.last_error: str | None = None
        self.attempts = 0
        # When the host was first found not answering since it last answered (listings and
        # reports say "unreachable since ...").
        self.down_since: datetime | None = None
        # The configured host's name (several hosts), and who is told its UUID once it answers,
        # before it is reconciled: the fleet answers with the name of another host that has
        # the same UUID (the same hypervisor by another URI), and this one becomes its alias.
        self.name = name
        self._identified = identified
        self.host_uuid: str | None = None
        # Set to the name of the host this one turned out to be (same host UUID): it is never
        # reached on its own.
        self.alias_of: str | None = None
        # Set when a host that was ready stops answering: ``run`` goes back to reaching it.
        self._lost = asyncio.Event()
        self._listeners: list[ReconciledListener] = []
        # Operations reconciled before anyone listened (start-up), kept for the first listener.
        self._unheard: list[Operation] = []

    @property
    def uri(self) -> str:
        return self._hv.uri

    def host_health(self) -> HostHealth:
        """What is known of the host now (for listings, Home, reports, metrics)."""
        return HostHealth(
            name=self.name or host_name_from_uri(self._hv.uri),
            uri=self._hv.uri,
            reachable=self.ready.is_set(),
            last_error=self.last_error,
            attempts=self.attempts,
            host_uuid=self.host_uuid,
            alias_of=self.alias_of,
            down_since=None if self.ready.is_set() else self.down_since,
        )

    def health(self) -> list[HostHealth]:
        """Every host this watch reaches (one), as ``FleetWatch.health`` lists several."""
        return [self.host_health()]

    def unreachable(self) -> list[HostHealth]:
        """The hosts that do not answer now (this one, or none)."""
        return unreachable(self.health())

    def lost(self, detail: str) -> None:
        """A call found the ready host unreachable: refuse requests again until it answers
        and has been reconciled (``run`` tries with backoff)."""
        if self.ready.is_set():
            logger.warning("hypervisor %s stopped answering: %s", self._hv.uri, detail)
        self.ready.clear()
        self.last_error = detail
        if self.down_since is None:
            self.down_since = datetime.now(UTC)
        self._lost.set()

    def check(self) -> None:
        """Raise ``HypervisorUnavailable`` until the hypervisor has answered and been
        reconciled."""
        if not self.ready.is_set():
            raise HypervisorUnavailable(
                ("" if self.name is None else f"host {self.name}: ")
                + f"the hypervisor at {self._hv.uri} is unreachable"
                + (f" ({self.last_error})" if self.last_error else "")
                + "; snapbot keeps trying and will check every interrupted operation when it "
                "answers"
            )

    async def on_reconciled(self, listener: ReconciledListener) -> None:
        """Call ``listener`` with every operation reconciled from now on (and those already
        reconciled that nobody has heard of yet): their requesters get the final word."""
        self._listeners.append(listener)
        if self._unheard:
            unheard, self._unheard = self._unheard, []
            await self._tell(unheard)

    async def connect_once(self) -> bool:
        """One attempt: reach the hypervisor, reconcile, sync. True when it is ready."""
        self.attempts += 1
        try:
            self.host_uuid = await self._hv.host_uuid()
            same = None if self._identified is None else self._identified(self.host_uuid)
            if same is not None:
                self.alias_of = same
                self.last_error = (
                    f"the same hypervisor as host {same} (host UUID {self.host_uuid}): "
                    f"{self.name or self._hv.uri} is an alias of {same}"
                )
                logger.warning("%s", self.last_error)
                return False
            reconciled = await self._reconciler.recover_interrupted()
            await self._reconciler.sync_all()
        except HypervisorError as exc:
            self.last_error = exc.detail
            if self.down_since is None:
                self.down_since = datetime.now(UTC)
            return False
        self.last_error = None
        self.down_since = None
        self._lost.clear()
        self.ready.set()
        await self._tell(reconciled)
        return True

    async def run(self) -> None:
        while self.alias_of is None:
            step = 0
            while not self.ready.is_set() and self.alias_of is None:
                if await self.connect_once():
                    break
                if self.alias_of is not None:
                    return
                delay = self._backoff[min(step, len(self._backoff) - 1)]
                logger.warning(
                    "hypervisor %s unreachable (%s); next attempt in %.0f s",
                    self._hv.uri,
                    self.last_error,
                    delay,
                )
                step += 1
                await asyncio.sleep(delay)
            if self.alias_of is not None:
                return
            logger.info("hypervisor %s answered; catalogue reconciled", self._hv.uri)
            while self.ready.is_set():
                try:
                    await asyncio.wait_for(self._lost.wait(), self._takeover_interval)
                except TimeoutError:
                    await self.take_over_stale_locks()

    async def take_over_stale_locks(self) -> list[Operation]:
        """Finish operations whose owner died while snapbot runs (not only at start-up)."""
        try:
            finished = await self._reconciler.recover_interrupted()
        except CoreError:
            logger.exception("looking for stale locks failed; trying again later")
            return []
        await self._tell(finished)
        return finished

    async def _tell(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        if not self._listeners:
            self._unheard.extend(operations)
            return
        for listener in self._listeners:
            try:
                await listener(operations)
            except Exception:
                logger.exception("telling requesters about reconciled operations failed")


class GatedHypervisor:
    """The configured hypervisor, refused with "unreachable" until ``watch`` says it answered
    and was reconciled: no request acts on a catalogue that has not been checked against it."""

    def __init__(self, inner: HostHypervisor, watch: HypervisorWatch) -> None:
        self._inner = inner
        self._watch = watch

    @property
    def uri(self) -> str:
        return self._inner.uri

    async def host_uuid(self) -> str:
        self._watch.check()
        return await self._inner.host_uuid()

    async def host_of(self, vm: Vm) -> HostIdentity:
        self._watch.check()
        return await self._inner.host_of(vm)

    async def hosts(self) -> list[HostIdentity]:
        self._watch.check()
        return await self._inner.hosts()

    async def list_vms(self) -> list[Vm]:
        self._watch.check()
        return await self._inner.list_vms()

    async def get_vm(self, name: str) -> Vm:
        self._watch.check()
        return await self._inner.get_vm(name)

    async def get_vm_by_uuid(self, uuid: str) -> Vm:
        self._watch.check()
        return await self._inner.get_vm_by_uuid(uuid)

    async def vm_facts(self, vm: Vm) -> VmFacts:
        self._watch.check()
        return await self._inner.vm_facts(vm)

    async def snapshot_places(self, facts: VmFacts) -> list[StoragePlace]:
        self._watch.check()
        return await self._inner.snapshot_places(facts)

    async def list_snapshots(self, vm: Vm) -> list[HypervisorSnapshot]:
        self._watch.check()
        return await self._inner.list_snapshots(vm)

    async def memory_state_sizes(self, vm: Vm) -> Mapping[str, int]:
        self._watch.check()
        return await self._inner.memory_state_sizes(vm)

    async def disk_allocation(self, vm: Vm) -> int | None:
        self._watch.check()
        return await self._inner.disk_allocation(vm)

    async def create_snapshot(
        self, vm: Vm, libvirt_name: str, description: str
    ) -> HypervisorSnapshot:
        self._watch.check()
        return await self._inner.create_snapshot(vm, libvirt_name, description)

    async def revert_snapshot(self, vm: Vm, libvirt_name: str, *, paused: bool) -> None:
        self._watch.check()
        await self._inner.revert_snapshot(vm, libvirt_name, paused=paused)

    async def delete_snapshot(self, vm: Vm, libvirt_name: str) -> None:
        self._watch.check()
        await self._inner.delete_snapshot(vm, libvirt_name)

    async def set_snapshot_description(self, vm: Vm, libvirt_name: str, description: str) -> None:
        self._watch.check()
        await self._inner.set_snapshot_description(vm, libvirt_name, description)

    async def discard_orphan(self, vm: Vm, libvirt_name: str) -> bool:
        self._watch.check()
        return await self._inner.discard_orphan(vm, libvirt_name)

    async def job_active(self, vm: Vm) -> bool | None:
        self._watch.check()
        return await self._inner.job_active(vm)

    async def state(self, vm: Vm) -> VmState:
        self._watch.check()
        return await self._inner.state(vm)

    async def state_cause(self, vm: Vm) -> StateCause:
        self._watch.check()
        return await self._inner.state_cause(vm)

    async def stop(self, vm: Vm) -> None:
        self._watch.check()
        await self._inner.stop(vm)

    async def start(self, vm: Vm) -> None:
        self._watch.check()
        await self._inner.start(vm)

    async def resume(self, vm: Vm) -> None:
        self._watch.check()
        await self._inner.resume(vm)

    async def close(self) -> None:
        await self._inner.close()
