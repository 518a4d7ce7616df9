"""The composition root: the only place that builds adapters and wires them to the services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.catalogue.db import open_database
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import FALLBACK_LIBVIRT_URI, Settings
from core.domain.operation import Operation
from core.errors import HypervisorUnavailable
from core.ports import Clock, Hypervisor
from core.services.confirmations import ConfirmationService
from core.services.operations import OperationRunner, process_owner
from core.services.pruning import PruneService
from core.services.reconcile import Reconciler
from core.services.schedules import HoldService, ScheduleService
from core.services.snapshots import SnapshotService

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Core:
    """Everything a front end needs."""

    settings: Settings
    snapshots: SnapshotService
    pruning: PruneService
    confirmations: ConfirmationService
    schedules: ScheduleService
    holds: HoldService
    runner: OperationRunner
    reconciler: Reconciler
    catalogue: TortoiseCatalogue
    clock: Clock
    libvirt_uri: str
    fallback_reason: str | None
    reconciled: tuple[Operation, ...]


async def _connect(settings: Settings) -> tuple[LibvirtConnection, str | None]:
    conn = LibvirtConnection(settings.libvirt_uri, workers=settings.libvirt_workers)
    try:
        await conn.run(lambda c: c.getLibVersion(), mutating=False)
        return conn, None
    except HypervisorUnavailable as exc:
        await conn.close()
        reason = f"cannot reach libvirt at {settings.libvirt_uri} ({exc.detail})"
    fallback = LibvirtConnection(FALLBACK_LIBVIRT_URI, workers=settings.libvirt_workers)
    await fallback.run(lambda c: c.getLibVersion(), mutating=False)
    return fallback, reason


@asynccontextmanager
async def build_core(settings: Settings, *, allow_fallback: bool = True) -> AsyncIterator[Core]:
    """Open libvirt and the catalogue, reconcile, and yield the wired services.

    With ``allow_fallback``, an unreachable libvirt daemon makes snapbot use libvirt's built-in
    test hypervisor instead, and ``Core.fallback_reason`` says why.
    """
    if allow_fallback:
        conn, fallback_reason = await _connect(settings)
    else:
        conn, fallback_reason = LibvirtConnection(settings.libvirt_uri), None
    hypervisor = LibvirtHypervisor(conn)
    try:
        async with open_database(settings.database_url):
            clock = SystemClock()
            core = wire(settings, hypervisor, TortoiseCatalogue(clock), clock, libvirt_uri=conn.uri)
            reconciled = await core.reconciler.recover_interrupted()
            await core.reconciler.sync_all()
            yield replace(core, fallback_reason=fallback_reason, reconciled=tuple(reconciled))
    finally:
        await hypervisor.close()


def wire(
    settings: Settings,
    hypervisor: Hypervisor,
    catalogue: TortoiseCatalogue,
    clock: Clock,
    *,
    libvirt_uri: str,
) -> Core:
    """Connect the services to a hypervisor and a catalogue (tests pass fakes here)."""
    owner = process_owner()
    runner = OperationRunner(catalogue, clock, owner)
    snapshots = SnapshotService(hypervisor, catalogue, runner, clock)
    return Core(
        settings=settings,
        snapshots=snapshots,
        pruning=PruneService(hypervisor, catalogue, snapshots, clock, ZoneInfo(settings.timezone)),
        confirmations=ConfirmationService(catalogue, clock),
        schedules=ScheduleService(catalogue, clock),
        holds=HoldService(snapshots, catalogue, clock),
        runner=runner,
        catalogue=catalogue,
        clock=clock,
        reconciler=Reconciler(hypervisor, catalogue, clock, owner),
        libvirt_uri=libvirt_uri,
        fallback_reason=None,
        reconciled=(),
    )
