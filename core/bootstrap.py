"""The composition root: the only place that builds adapters and wires them to the services.

Front ends receive the result, ``core.services.facade.Core``; only a process's entry point
(``bot.cli``) and tests import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from zoneinfo import ZoneInfo

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.charts import MatplotlibCharts
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess, is_local
from core.adapters.libvirt.drill import LibvirtDrillLab
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.adapters.offsite import Bucket, S3OffsiteStore
from core.catalogue.db import open_database
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import FALLBACK_LIBVIRT_URI, Settings
from core.domain.hosts import HostConfig
from core.errors import HypervisorUnavailable
from core.ports import (
    BackupStore,
    Clock,
    DiskAccess,
    HostHypervisor,
    Hypervisor,
    OffsiteStore,
    OperationObserver,
)
from core.services.availability import BACKOFF, GatedHypervisor, HypervisorWatch
from core.services.backups import BackupService
from core.services.confirmations import ConfirmationService
from core.services.drills import DrillLab, DrillService
from core.services.facade import Core
from core.services.fleet import SLOT_WAIT, Fleet, FleetWatch, HostRoutedDisks, Owns
from core.services.locks import LockService, OutcomeJudge
from core.services.offsite import OffsiteService
from core.services.operations import OperationRunner, process_owner
from core.services.overview import OverviewService
from core.services.pruning import PruneService
from core.services.reconcile import Reconciler
from core.services.scheduled_runs import ScheduleRunner
from core.services.schedules import HoldService, ScheduleService
from core.services.snapshots import SnapshotService
from core.services.status import StatusService
from core.services.usage import UsageService
from scheduler.timing import CronTimetable

__all__ = ["Core", "build_core", "demo_allowed", "wire"]

logger = logging.getLogger(__name__)

# The demo hypervisor's catalogue lives and dies with the process: nothing in it is real.
DEMO_DATABASE_URL = "sqlite://:memory:"


def demo_allowed(settings: Settings) -> bool:
    """The demo hypervisor is for a first run with no configuration only: never when a
    hypervisor was named or Slack is configured (a real team relies on that process)."""
    return not settings.libvirt_uri_explicit and settings.slack is None


async def _answers(uri: str, workers: int) -> str | None:
    """None when libvirt at ``uri`` answers, else why not."""
    probe = LibvirtConnection(uri, workers=workers)
    try:
        await probe.run(lambda c: c.getLibVersion(), mutating=False)
        return None
    except HypervisorUnavailable as exc:
        return exc.detail
    finally:
        await probe.close()


@asynccontextmanager
async def build_core(
    settings: Settings, *, allow_demo: bool = True, observer: OperationObserver | None = None
) -> AsyncIterator[Core]:
    """Open libvirt and the catalogue, and yield the wired services.

    The configured hypervisor is never replaced by another: if it does not answer, snapbot
    starts anyway, every request is told it is unreachable, and the catalogue is reconciled
    once it answers (``HypervisorWatch``). Only a first run with no configuration at all
    (``demo_allowed``) shows libvirt's built-in demo hypervisor instead, with its own
    throw-away in-memory catalogue, so no real record is ever judged against demo VMs.
    """
    uri, database_url, fallback_reason = settings.libvirt_uri, settings.database_url, None
    if allow_demo and demo_allowed(settings):
        why = await _answers(uri, settings.libvirt_workers)
        if why is not None:
            fallback_reason = f"cannot reach libvirt at {uri} ({why})"
            uri, database_url = FALLBACK_LIBVIRT_URI, DEMO_DATABASE_URL
    connection = LibvirtConnection(
        uri, workers=settings.libvirt_workers, mutation_deadline=settings.libvirt_timeout
    )
    hypervisor = LibvirtHypervisor(connection)
    # Several hosts: each its own connection (its own worker pool, reconnect and deadline).
    # The first is ``connection`` above (``libvirt_uri`` is the first host's URI).
    hosts: list[tuple[HostConfig, HostHypervisor]] = []
    others: list[LibvirtHypervisor] = []
    connections = {settings.hosts[0].name: connection} if settings.hosts else {}
    if settings.hosts:
        hosts.append(
            (settings.hosts[0], LibvirtHypervisor(connection, name=settings.hosts[0].name))
        )
        for config in settings.hosts[1:]:
            connections[config.name] = LibvirtConnection(
                config.uri,
                workers=settings.libvirt_workers,
                mutation_deadline=settings.libvirt_timeout,
            )
            other = LibvirtHypervisor(connections[config.name], name=config.name)
            others.append(other)
            hosts.append((config, other))
    # The demo hypervisor gets no backup store: its VMs are not real, their backups would be.
    store = (
        DirectoryBackupStore(settings.backup_dir)
        if settings.backup_dir is not None and fallback_reason is None
        else None
    )
    offsite = (
        S3OffsiteStore(
            Bucket(settings.offsite.url, settings.offsite.bucket, region=settings.offsite.region),
            settings.backup_dir,
            delete_after=timedelta(days=settings.offsite.delete_after_days),
        )
        if settings.offsite is not None and fallback_reason is None
        else None
    )
    # Without a store of its own, snapbot reads the offsite copy: a host whose store was lost
    # lists and restores every point kept there.
    readable: BackupStore | None = store if store is not None else offsite
    # Several hosts: each VM's disks through its own host's connection; VMs defined anew go to
    # the first host on this machine (snapbot writes their images itself).
    per_host = (
        {name: LibvirtDiskAccess(conn) for name, conn in connections.items()}
        if readable is not None and len(connections) > 1
        else {}
    )
    disks = LibvirtDiskAccess(connection) if readable is not None and not per_host else None
    # Drills boot restore points beside the VMs: only where snapbot reads disks itself.
    lab = LibvirtDrillLab(connection) if disks is not None else None
    watcher: asyncio.Task[None] | None = None
    copier: asyncio.Task[None] | None = None
    copies: OffsiteService | None = None
    overview: OverviewService | None = None
    try:
        async with open_database(database_url):
            clock = SystemClock()
            core = wire(
                settings,
                hosts or hypervisor,
                TortoiseCatalogue(clock),
                clock,
                libvirt_uri=uri if not hosts else ", ".join(c.uri for c, _ in hosts),
                gated=True,
                observer=observer,
                store=readable,
                disks=disks,
                per_host_disks=per_host,
                lab=lab,
                offsite=offsite,
            )
            await core.watch.connect_once()
            watcher = asyncio.create_task(core.watch.run(), name="hypervisor-watch")
            if core.drills is not None:
                # Throwaway VMs of drills a snapbot that died left behind, and their records.
                await core.drills.sweep()
            copies = core.offsite
            overview = core.overview
            if core.offsite is not None and store is not None:
                copier = asyncio.create_task(core.offsite.run_periodically(), name="offsite")
            yield replace(core, fallback_reason=fallback_reason)
    finally:
        for task in (watcher, copier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if overview is not None:
            await overview.close()
        if copies is not None:
            await copies.close()
        if disks is not None:
            await disks.close()
        for access in per_host.values():
            await access.close()
        if lab is not None:
            await lab.close()
        if store is not None:
            store.close()
        if offsite is not None:
            offsite.close()
        await hypervisor.close()
        for other in others:
            await other.close()


def _home_host(hosts: Sequence[tuple[HostConfig, HostHypervisor]]) -> str:
    """The host VMs restored anew are defined on: the first configured on this machine."""
    for config, _ in hosts:
        if is_local(config.uri):
            return config.name
    return hosts[0][0].name


def wire(
    settings: Settings,
    hypervisor: HostHypervisor | Sequence[tuple[HostConfig, HostHypervisor]],
    catalogue: TortoiseCatalogue,
    clock: Clock,
    *,
    libvirt_uri: str,
    gated: bool = False,
    observer: OperationObserver | None = None,
    store: BackupStore | None = None,
    disks: DiskAccess | None = None,
    per_host_disks: Mapping[str, DiskAccess] | None = None,
    lab: DrillLab | None = None,
    offsite: OffsiteStore | None = None,
    slot_wait: float = SLOT_WAIT,
    backoff: Sequence[float] = BACKOFF,
) -> Core:
    """Connect the services to a hypervisor and a catalogue (tests pass fakes here). With
    ``gated`` the services refuse every request until ``Core.watch`` has reached the
    hypervisor and reconciled; without, the caller vouches that it has.

    Given several hosts (configured name and hypervisor each), the services work on a
    ``Fleet``: each host has its own watch and reconciler and is refused until it answered
    and was reconciled (whatever ``gated`` says), and runs at most its ``max_operations``
    operations at once (one waiting longer than ``slot_wait`` is refused)."""
    owner = process_owner()
    services_hv: Hypervisor
    judge: OutcomeJudge
    watch: HypervisorWatch | FleetWatch
    if isinstance(hypervisor, Sequence):
        fleet = Fleet(slot_wait=slot_wait)
        runner = OperationRunner(catalogue, clock, owner, observer, slots=fleet.slot)
        if per_host_disks:
            disks = HostRoutedDisks(fleet, per_host_disks, home=_home_host(hypervisor))
        for config, host in hypervisor:

            def reconciler_for(owns: Owns, host: HostHypervisor = host) -> Reconciler:
                return Reconciler(
                    host,
                    catalogue,
                    clock,
                    owner,
                    on_end=runner.ended,
                    store=store,
                    disks=disks,
                    owns=owns,
                )

            fleet.add_host(config, host, reconciler_for, backoff=backoff)
        services_hv, judge, watch = fleet, fleet, fleet.watch
    else:
        runner = OperationRunner(catalogue, clock, owner, observer)
        # The reconciler works on the hypervisor itself (it is what makes it ready); the
        # services get it behind the gate, which says "unreachable" until then.
        reconciler = Reconciler(
            hypervisor, catalogue, clock, owner, on_end=runner.ended, store=store, disks=disks
        )
        judge = reconciler
        watch = single = HypervisorWatch(hypervisor, reconciler, backoff=backoff)
        if gated:
            services_hv = GatedHypervisor(hypervisor, single)
        else:
            services_hv = hypervisor
            single.ready.set()
    snapshots = SnapshotService(services_hv, catalogue, runner, clock, store)
    copies = OffsiteService(offsite, clock) if offsite is not None else None
    backups = (
        None
        if store is None or disks is None
        else BackupService(
            services_hv,
            disks,
            store,
            catalogue,
            runner,
            clock,
            snapshots,
            # Not when the store read is the offsite copy itself: nothing to copy from.
            after_change=(
                copies.copy_soon
                if copies is not None and not isinstance(store, S3OffsiteStore)
                else None
            ),
        )
    )
    drills = (
        None
        if lab is None
        else DrillService(
            services_hv,
            catalogue,
            lab,
            runner,
            clock,
            snapshots,
            settings.drills,
            disks=disks,
            store=store,
        )
    )
    pruning = PruneService(
        services_hv, catalogue, snapshots, clock, ZoneInfo(settings.timezone), runner, backups
    )
    usage = UsageService(services_hv, catalogue, clock, MatplotlibCharts(), store)
    return Core(
        settings=settings,
        snapshots=snapshots,
        backups=backups,
        pruning=pruning,
        confirmations=ConfirmationService(catalogue, clock),
        schedules=ScheduleService(catalogue, clock, CronTimetable()),
        holds=HoldService(snapshots, catalogue, clock, runner),
        locks=LockService(services_hv, catalogue, runner, judge),
        runs=ScheduleRunner(
            snapshots,
            pruning,
            catalogue,
            clock,
            owner,
            safety_keep=(settings.safety_keep_last, settings.safety_keep_days),
            backups=backups,
            drills=drills,
            hosts=watch.health,
        ),
        watch=watch,
        schedule_store=catalogue,
        clock=clock,
        owner=owner,
        libvirt_uri=libvirt_uri,
        fallback_reason=None,
        status=StatusService(catalogue, watch, clock),
        _operations=runner,
        drills=drills,
        offsite=copies,
        usage=usage,
        overview=OverviewService(services_hv, catalogue, clock),
    )
