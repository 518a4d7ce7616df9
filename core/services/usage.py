"""Storage usage: what each VM and the backup store take and where, what deleting would give
back, the daily history kept in the catalogue, forecasts of when filesystems fill, and the
chart of it all. Front ends word the values (``bot.messages``); the scheduler calls
``sample_today`` once a day.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from core.domain.backups import PointRef
from core.domain.hosts import HostIdentity, qualified
from core.domain.names import closest
from core.domain.snapshot import CatalogueStatus, Snapshot, SnapshotKind
from core.domain.usage import (
    CHART_DAYS,
    FORECAST_WINDOW_DAYS,
    HISTORY_DAYS,
    FilesystemUsage,
    Forecast,
    PlaceRole,
    ReclaimEstimate,
    SampleKind,
    StoreUsage,
    UsageHistory,
    UsageReport,
    UsageSample,
    VmBackupUsage,
    VmUsage,
    build_history,
    forecasts_from,
    internal_disk_estimate,
)
from core.domain.vm import Vm
from core.errors import VmNotFound
from core.ports import (
    BackupStore,
    ChartRenderer,
    Clock,
    Hypervisor,
    SnapshotTally,
    UsageStore,
)

__all__ = ["UsageCatalogue", "UsageService"]

logger = logging.getLogger(__name__)


class UsageCatalogue(UsageStore, Protocol):
    """What usage needs of the catalogue: the samples, and the snapshot records (memory
    states of full snapshots)."""

    async def snapshots(self, vm_uuid: str | None = None) -> list[Snapshot]: ...

    async def snapshot_tallies(self) -> dict[str, SnapshotTally]: ...


@dataclass(frozen=True, slots=True)
class _Measured:
    vms: tuple[VmUsage, ...]
    store: StoreUsage | None
    filesystems: tuple[FilesystemUsage, ...]


def _present_full(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    return [
        s for s in snapshots if s.kind is SnapshotKind.FULL and s.status is CatalogueStatus.PRESENT
    ]


def _named_host(name: str, hosts: Sequence[HostIdentity]) -> HostIdentity | None:
    """The host ``name`` names (by its configured name, URI, host name or UUID), if any."""
    for host in hosts:
        hostname = urlsplit(host.uri).hostname
        if name in {host.name, host.uri, host.uuid, hostname or socket.gethostname()}:
            return host
    return None


class UsageService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: UsageCatalogue,
        clock: Clock,
        charts: ChartRenderer,
        store: BackupStore | None = None,
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._clock = clock
        self._charts = charts
        self._store = store

    # --- the report ---------------------------------------------------------------------------

    async def report(self, vm_or_host: str | None = None) -> UsageReport:
        """Every VM of the host (``vm_or_host`` None, or naming the host by its URI, host
        name or UUID), or one VM (``VmNotFound`` lists the closest names). The store and every
        filesystem involved are in both; forecasts only for the filesystems in the report."""
        vm = None
        hosts = await self._hv.hosts()
        named = None if vm_or_host is None else _named_host(vm_or_host, hosts)
        if vm_or_host is not None and named is None:
            vm = await self._vm(vm_or_host)
        measured = await self._measure(vm, named.name if named is not None else None)
        wheres = {f.where for f in measured.filesystems}
        forecasts = tuple(f for f in await self.forecasts() if f.where in wheres)
        return UsageReport(
            host=", ".join(h.uri for h in ([named] if named is not None else hosts)),
            taken_at=self._clock.now(),
            vms=measured.vms,
            store=measured.store,
            filesystems=measured.filesystems,
            forecasts=forecasts,
            vm=vm.name if vm is not None else None,
        )

    async def _vm(self, name: str) -> Vm:
        try:
            return await self._hv.get_vm(name)
        except VmNotFound:
            names = [v.name for v in await self._hv.list_vms()]
            raise VmNotFound(name, closest(name, names)) from None

    async def _measure(self, only: Vm | None, host: str | None = None) -> _Measured:
        vms = [only] if only is not None else await self._hv.list_vms()
        # A VM of one host among several carries its host's name; one hypervisor's do not.
        vms = [v for v in vms if host is None or v.host in (None, host)]
        # Each VM's full snapshots and their memory states, summed by the database in one
        # pass: not every record read and then filtered once per VM (issue 12).
        tallies = await self._catalogue.snapshot_tallies()
        points_by_vm: dict[str, list[PointRef]] = {}
        logical_by_vm: dict[str, int] = {}
        added_by_vm: dict[str, int] = {}
        store_usage: StoreUsage | None = None
        if self._store is not None:
            store_usage = await self._store.usage()
            for point in await self._store.list_points(only.uuid if only is not None else None):
                uuid = point.ref.vm_uuid
                points_by_vm.setdefault(uuid, []).append(point.ref)
                logical_by_vm[uuid] = logical_by_vm.get(uuid, 0) + point.logical_size
                added_by_vm[uuid] = added_by_vm.get(uuid, 0) + point.figures.bytes_stored
        places: dict[str, FilesystemUsage] = {}
        usages: list[VmUsage] = []
        for vm in vms:
            try:
                facts = await self._hv.vm_facts(vm)
                vm_places = await self._hv.snapshot_places(facts)
                disk = await self._hv.disk_allocation(vm)
            except VmNotFound:
                continue  # undefined since the listing
            for place in vm_places:
                known = places.get(place.where)
                if known is None:
                    places[place.where] = FilesystemUsage(
                        place.where,
                        PlaceRole.VM_DISKS,
                        place.available_bytes,
                        None,
                        place.unknown_because,
                        (vm.name,),
                    )
                else:
                    places[place.where] = replace(known, vms=(*known.vms, vm.name))
            tally = tallies.get(vm.uuid)
            refs = points_by_vm.get(vm.uuid, [])
            exclusive = 0
            if refs and self._store is not None:
                exclusive = await self._store.exclusive_bytes(refs)
            usages.append(
                VmUsage(
                    vm_uuid=vm.uuid,
                    # with its host where snapbot serves several: names may be shared
                    vm_name=qualified(vm.host, vm.name),
                    disk_bytes=disk,
                    memory_state_bytes=tally.memory_bytes if tally is not None else 0,
                    full_snapshots=tally.full if tally is not None else 0,
                    backup=VmBackupUsage(
                        points=len(refs),
                        logical_bytes=logical_by_vm.get(vm.uuid, 0),
                        added_bytes=added_by_vm.get(vm.uuid, 0),
                        exclusive_bytes=exclusive,
                    ),
                    places=tuple(p.where for p in vm_places),
                )
            )
        filesystems = sorted(places.values(), key=lambda f: f.where)
        if store_usage is not None:
            filesystems.append(
                FilesystemUsage(
                    store_usage.where,
                    PlaceRole.BACKUP_STORE,
                    store_usage.free_bytes,
                    store_usage.total_bytes,
                    None if store_usage.free_bytes is not None else "cannot be measured",
                )
            )
        return _Measured(tuple(usages), store_usage, tuple(filesystems))

    # --- what deleting frees ------------------------------------------------------------------

    async def prune_estimate(self, snapshots: Sequence[Snapshot]) -> ReclaimEstimate:
        """What deleting ``snapshots`` (of any VMs, any kinds) would give back: memory states
        and store chunks only they use exactly, internal disk data as an estimate."""
        memory = unknown = 0
        refs: list[PointRef] = []
        full_by_vm: dict[str, int] = {}
        for snapshot in snapshots:
            if snapshot.kind is SnapshotKind.FULL:
                full_by_vm[snapshot.vm_uuid] = full_by_vm.get(snapshot.vm_uuid, 0) + 1
                if snapshot.has_memory and snapshot.memory_bytes is None:
                    unknown += 1
                memory += snapshot.memory_bytes or 0
            elif snapshot.point_id is not None:
                refs.append(PointRef(snapshot.vm_uuid, snapshot.point_id))
        store_bytes = 0
        if refs and self._store is not None:
            store_bytes = await self._store.exclusive_bytes(refs)
        disk_estimate = 0
        for uuid, deleted in full_by_vm.items():
            try:
                vm = await self._hv.get_vm_by_uuid(uuid)
                allocation = await self._hv.disk_allocation(vm)
            except VmNotFound:
                continue
            present = _present_full(await self._catalogue.snapshots(uuid))
            disk_estimate += internal_disk_estimate(
                allocation, sum(s.memory_bytes or 0 for s in present), len(present), deleted
            )
        return ReclaimEstimate(
            snapshots=len(snapshots),
            memory_bytes=memory,
            store_bytes=store_bytes,
            disk_estimate_bytes=disk_estimate,
            memory_unknown=unknown,
        )

    # --- history ------------------------------------------------------------------------------

    def _today(self) -> date:
        return self._clock.now().date()

    async def sample_today(self) -> None:
        """Record today's usage of every VM, the store and every filesystem (a second call the
        same day replaces the first) and forget samples older than ``HISTORY_DAYS``."""
        today = self._today()
        measured = await self._measure(None)
        samples = [
            UsageSample(
                day=today,
                kind=SampleKind.VM,
                subject=vm.vm_uuid,
                name=vm.vm_name,
                disk_bytes=vm.disk_bytes,
                memory_bytes=vm.memory_state_bytes,
                backup_bytes=vm.backup.added_bytes,
                logical_bytes=vm.backup.logical_bytes,
            )
            for vm in measured.vms
        ]
        store = measured.store
        if store is not None:
            used = (
                None
                if store.total_bytes is None or store.free_bytes is None
                else store.total_bytes - store.free_bytes
            )
            samples.append(
                UsageSample(
                    day=today,
                    kind=SampleKind.STORE,
                    subject=store.where,
                    name=store.where,
                    backup_bytes=store.stored_bytes,
                    logical_bytes=store.logical_bytes,
                    used_bytes=used,
                    free_bytes=store.free_bytes,
                )
            )
        for fs in measured.filesystems:
            if fs.role is PlaceRole.VM_DISKS and fs.free_bytes is not None:
                samples.append(
                    UsageSample(
                        day=today,
                        kind=SampleKind.FILESYSTEM,
                        subject=fs.where,
                        name=fs.where,
                        used_bytes=fs.used_bytes,
                        free_bytes=fs.free_bytes,
                    )
                )
        await self._catalogue.record_usage(samples)
        forgotten = await self._catalogue.forget_usage_before(
            today - timedelta(days=HISTORY_DAYS - 1)
        )
        logger.info(
            "Usage sampled for %s: %d samples, %d old ones forgotten",
            today,
            len(samples),
            forgotten,
        )

    async def history(self, vm: str | None = None, days: int = CHART_DAYS) -> UsageHistory:
        """The last ``days`` days (today included): per VM, the store, the total, and each
        filesystem's free space. With ``vm``: that VM (by name, also one since deleted whose
        samples remain), and the filesystems."""
        end = self._today()
        start = end - timedelta(days=max(1, days) - 1)
        samples = await self._catalogue.usage_samples(start)
        if vm is not None:
            uuid = await self._vm_uuid(vm, samples)
            samples = [
                s
                for s in samples
                if (s.kind is SampleKind.VM and s.subject == uuid)
                or s.kind is SampleKind.FILESYSTEM
            ]
        return build_history(samples, start, end)

    async def _vm_uuid(self, name: str, samples: Sequence[UsageSample]) -> str:
        try:
            return (await self._hv.get_vm(name)).uuid
        except VmNotFound:
            for s in reversed(samples):
                if s.kind is SampleKind.VM and s.name == name:
                    return s.subject
            names = {v.name for v in await self._hv.list_vms()}
            names |= {s.name for s in samples if s.kind is SampleKind.VM}
            raise VmNotFound(name, closest(name, names)) from None

    async def forecasts(self) -> list[Forecast]:
        """When each filesystem (and the store's) fills at the rate of the last
        ``FORECAST_WINDOW_DAYS`` days; ``Forecast.soon`` flags those within 14 days."""
        history = await self.history(None, FORECAST_WINDOW_DAYS)
        return list(forecasts_from(history, history.end))

    async def chart(self, vm: str | None = None, days: int = CHART_DAYS) -> bytes:
        """A PNG of ``history(vm, days)`` with each filesystem's forecast line."""
        history = await self.history(vm, days)
        forecasts = forecasts_from(history, history.end)
        return await asyncio.to_thread(self._charts.render_usage, history, forecasts)
