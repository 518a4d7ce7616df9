"""The one door into the core: every use case a front end or the scheduler may call.

``Core`` holds the use-case services, typed by what they are; each of them depends on ports
only (``core.ports``). The composition root (``core.bootstrap``) is the only place that builds
adapters and hands them in; nothing here imports libvirt, tortoise, Slack or apscheduler.

Who calls what: the console and every Slack surface go through ``bot.dispatch.Dispatcher``,
which calls these services; the scheduler calls ``runs``, ``holds`` and ``schedule_store``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import Settings
from core.ports import Clock, Directory, ScheduleStore
from core.services.access import AccessService, host_lookup
from core.services.availability import HypervisorWatch
from core.services.backups import BackupService
from core.services.confirmations import ConfirmationService
from core.services.drills import DrillService
from core.services.fleet import FleetWatch
from core.services.locks import LockService
from core.services.offsite import OffsiteService
from core.services.operations import OperationRunner
from core.services.overview import OverviewService
from core.services.pruning import PruneService
from core.services.scheduled_runs import ScheduleRunner
from core.services.schedules import HoldService, ScheduleService
from core.services.snapshots import SnapshotService
from core.services.status import StatusService
from core.services.usage import UsageService


@dataclass(frozen=True, slots=True)
class Core:
    """The use cases, wired (``core.bootstrap.build_core`` or ``wire``)."""

    settings: Settings
    snapshots: SnapshotService
    # Incremental snapshots in the backup store; None when no store is configured
    # (``SNAPBOT_BACKUP_DIR``): front ends say so and how to set one up.
    backups: BackupService | None
    pruning: PruneService
    confirmations: ConfirmationService
    schedules: ScheduleService
    holds: HoldService
    locks: LockService
    runs: ScheduleRunner
    # Reaches the hypervisor (one host), or each host (``FleetWatch``); ``health()`` and
    # ``unreachable()`` say which hosts answer, in both.
    watch: HypervisorWatch | FleetWatch
    # the scheduler's lease and slot claims
    schedule_store: ScheduleStore
    clock: Clock
    # this process, as lock rows and leases name it
    owner: str
    libvirt_uri: str
    # Why snapbot shows libvirt's demo hypervisor instead of a real one (None: it does not).
    fallback_reason: str | None
    # what metrics read at scrape time (catalogue only)
    status: StatusService
    # The Home tab's read model: VMs with their snapshots counted, storage last measured.
    overview: OverviewService
    _operations: OperationRunner = field(repr=False)
    # The offsite copy of the backup store (None: none configured, SNAPBOT_OFFSITE_URL).
    offsite: OffsiteService | None = None
    # Storage usage, its history, forecasts and chart (None only where a caller builds a Core
    # by hand without it).
    usage: UsageService | None = None
    # Restore drills (None: this snapbot cannot read VMs' disks, so it cannot drill).
    drills: DrillService | None = None

    def access_for(self, directory: Directory) -> AccessService:
        """Role checks for a front end that serves many people, with refusals audited like
        every other request."""
        return AccessService(
            self.settings.access,
            directory,
            self._operations,
            hosts=host_lookup(self.snapshots.vm, self.watch.health),
        )
