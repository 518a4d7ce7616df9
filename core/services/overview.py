"""The Home tab's read model: every VM with its state, who holds it and its snapshots counted,
the newest snapshots of the VMs a view shows, and storage as last sampled.

Opening the Home tab must stay fast whatever the fleet (issue 12: 1,000 VMs and 100,000
snapshots), so it reads, per opening:

- one ``list_vms`` of the hypervisor (of each host) for the VMs and their states; no other
  libvirt call, and no sync of the catalogue with libvirt. The catalogue is kept current by
  snapbot's own operations (an operation's result is in it before the operation ends);
  snapshots made or deleted outside snapbot show once something syncs the VM (a
  ``/snapshot list``, an operation on it, the start-up reconciliation);
- the running operations (who holds which VM);
- each VM's records summed up by the database (``SnapshotStore.snapshot_tallies``), and the
  newest few records of only the VMs shown (``SnapshotStore.newest_snapshots``).

Storage (disk images, filesystems, the backup store) is not measured for the tab: measuring
takes a few libvirt calls per VM (seconds at a thousand VMs, and the host's daemon busy all
along). The tab shows the latest daily usage samples instead (``UsageService.sample_today``,
taken by the scheduler once a day), with their day, and the fill forecasts made from them;
``/snapshot usage`` measures live. Memory states are the catalogue's, current. The samples are
read again at most every ``STORAGE_REREAD`` (in the background: an opening never waits for it
once a first read is done), so a new day's samples show within that time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Protocol

from core.domain.snapshot import Snapshot
from core.domain.usage import (
    FORECAST_WINDOW_DAYS,
    Forecast,
    SampleKind,
    UsageSample,
    build_history,
    forecasts_from,
)
from core.domain.vm import Vm
from core.errors import LockHolder
from core.ports import Clock, Hypervisor, RunningOperation, SnapshotTally

__all__ = [
    "NEWEST_SHOWN",
    "STORAGE_REREAD",
    "OverviewCatalogue",
    "OverviewService",
    "StorageGlance",
    "VmOverview",
]

logger = logging.getLogger(__name__)

# How many of a VM's snapshots the Home tab lists (the rest are counted, "… and N older").
NEWEST_SHOWN = 10
# How often the Home tab reads the latest usage samples again (they change once a day).
STORAGE_REREAD = timedelta(minutes=1)

_NO_SNAPSHOTS = SnapshotTally(
    vm_name="", present=0, missing=0, damaged=0, held=0, full=0, memory_bytes=0
)


class OverviewCatalogue(Protocol):
    """What the overview reads of the catalogue: aggregates, never every record."""

    async def snapshot_tallies(self) -> dict[str, SnapshotTally]: ...

    async def newest_snapshots(
        self, vm_uuids: Collection[str], per_vm: int
    ) -> dict[str, list[Snapshot]]: ...

    async def running_operations(self) -> list[RunningOperation]: ...

    async def usage_samples(
        self, since: date, kind: SampleKind | None = None, subject: str | None = None
    ) -> list[UsageSample]: ...


@dataclass(frozen=True, slots=True)
class VmOverview:
    """One VM as the Home tab shows it. ``vm`` is None for a VM libvirt no longer lists (or
    whose host does not answer) that still has records. ``newest`` holds its newest snapshots,
    newest first, once asked for (``OverviewService.with_newest``); ``tally`` counts them all.
    """

    vm_uuid: str
    vm_name: str
    vm: Vm | None
    busy: LockHolder | None
    tally: SnapshotTally
    newest: tuple[Snapshot, ...] = ()

    @property
    def older(self) -> int:
        """Snapshots not among ``newest``."""
        return max(0, self.tally.total - len(self.newest))


@dataclass(frozen=True, slots=True)
class StorageGlance:
    """The latest day's usage samples: each sampled VM's disk images (by UUID), the backup
    store, each filesystem whose free space was known, and the fill forecasts of the last
    ``FORECAST_WINDOW_DAYS`` days of samples."""

    day: date
    vm_disk_bytes: Mapping[str, int]
    store: UsageSample | None
    filesystems: tuple[UsageSample, ...]
    forecasts: tuple[Forecast, ...]

    def disk_bytes(self, vm_uuids: Iterable[str]) -> int:
        """The disk images of those VMs, as sampled (a VM without a sample counts nothing)."""
        return sum(self.vm_disk_bytes.get(uuid, 0) for uuid in vm_uuids)


class OverviewService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: OverviewCatalogue,
        clock: Clock,
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._clock = clock
        self._storage: StorageGlance | None = None
        self._storage_read_at: datetime | None = None
        self._reading: asyncio.Task[None] | None = None

    async def vms(self) -> list[VmOverview]:
        """Every VM the hypervisor lists (its order), then the VMs only the catalogue knows
        (by name), each with its snapshots counted and the operation holding it, if any."""
        # The hypervisor and the database answer at the same time (each in a thread of its own).
        vms, running, tallies = await asyncio.gather(
            self._hv.list_vms(),
            self._catalogue.running_operations(),
            self._catalogue.snapshot_tallies(),
        )
        busy = {
            r.operation.vm_uuid: LockHolder(
                r.operation.kind.value, r.operation.requested_by, r.operation.started_at
            )
            for r in running
        }
        listed = [
            VmOverview(vm.uuid, vm.name, vm, busy.get(vm.uuid), tallies.get(vm.uuid, _NO_SNAPSHOTS))
            for vm in vms
        ]
        known = {vm.uuid for vm in vms}
        gone = sorted(
            (
                VmOverview(uuid, tally.vm_name, None, None, tally)
                for uuid, tally in tallies.items()
                if uuid not in known
            ),
            key=lambda v: (v.vm_name, v.vm_uuid),
        )
        return [*listed, *gone]

    async def with_newest(
        self, vms: Sequence[VmOverview], per_vm: int = NEWEST_SHOWN
    ) -> list[VmOverview]:
        """``vms`` with their ``per_vm`` newest snapshots, read in one query for all of them
        (ask only for the VMs a view shows)."""
        with_records = [v.vm_uuid for v in vms if v.tally.total]
        newest = (
            await self._catalogue.newest_snapshots(with_records, per_vm) if with_records else {}
        )
        return [replace(v, newest=tuple(newest.get(v.vm_uuid, ()))) for v in vms]

    async def storage(self) -> StorageGlance | None:
        """Storage as last sampled (None: never sampled yet). The first call reads the
        samples; later ones answer at once, and read them again in the background when the
        last read is ``STORAGE_REREAD`` old."""
        now = self._clock.now()
        if self._storage_read_at is None:
            await self._read_storage()
        elif now - self._storage_read_at >= STORAGE_REREAD and self._reading is None:
            self._reading = asyncio.create_task(self._reread(), name="home-storage")
        return self._storage

    async def _reread(self) -> None:
        try:
            await self._read_storage()
        except Exception:
            logger.exception("reading the usage samples for the Home tab failed")
        finally:
            self._reading = None

    async def _read_storage(self) -> None:
        # Marked first: a failing read is not retried by every opening either.
        self._storage_read_at = now = self._clock.now()
        today = now.date()
        start = today - timedelta(days=FORECAST_WINDOW_DAYS - 1)
        places = [
            *await self._catalogue.usage_samples(start, SampleKind.FILESYSTEM),
            *await self._catalogue.usage_samples(start, SampleKind.STORE),
        ]
        # The VMs of the latest day only: a month of a thousand VMs' samples is not read.
        latest = max((s.day for s in places), default=None)
        vms = await self._catalogue.usage_samples(
            latest or today - timedelta(days=1), SampleKind.VM
        )
        day = max((s.day for s in [*places, *vms]), default=None)
        if day is None:
            self._storage = None
            return
        history = build_history(places, start, today)
        self._storage = StorageGlance(
            day=day,
            vm_disk_bytes={
                s.subject: s.disk_bytes for s in vms if s.day == day and s.disk_bytes is not None
            },
            store=next((s for s in places if s.kind is SampleKind.STORE and s.day == day), None),
            filesystems=tuple(
                s for s in places if s.kind is SampleKind.FILESYSTEM and s.day == day
            ),
            forecasts=forecasts_from(history, today),
        )

    async def close(self) -> None:
        """Stop a read still running (at shutdown)."""
        task, self._reading = self._reading, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
