"""The Home tab's read model: every VM with its state, who holds it and its snapshots counted,
the newest snapshots of the VMs a view shows, and the latest storage measurement.

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

Storage figures (disk images, filesystems, the backup store) come from the last complete
measurement (``UsageService.report``), shown with the time it was taken. Measuring means a few
libvirt calls per VM, so it is never done for an opening: an opening that finds the last
measurement older than ``USAGE_MAX_AGE`` (or none) starts one in the background, and the
``on_measured`` hooks run once it is done (the Home tab publishes itself again). So storage is
measured at most once every ``USAGE_MAX_AGE``, and only while someone looks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from core.domain.snapshot import Snapshot
from core.domain.usage import UsageReport
from core.domain.vm import Vm
from core.errors import CoreError, LockHolder
from core.ports import Clock, Hypervisor, RunningOperation, SnapshotTally
from core.services.usage import UsageService

__all__ = ["NEWEST_SHOWN", "USAGE_MAX_AGE", "OverviewCatalogue", "OverviewService", "VmOverview"]

logger = logging.getLogger(__name__)

# How many of a VM's snapshots the Home tab lists (the rest are counted, "… and N older").
NEWEST_SHOWN = 10
# The storage figures shown may be this old before an opening measures them again.
USAGE_MAX_AGE = timedelta(minutes=5)

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


class OverviewService:
    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: OverviewCatalogue,
        clock: Clock,
        usage: UsageService | None,
    ) -> None:
        self._hv = hypervisor
        self._catalogue = catalogue
        self._clock = clock
        self._usage = usage
        self._measured: UsageReport | None = None
        # When the last measurement was started, whether it succeeded or not: a failing one is
        # not retried on every opening either.
        self._tried_at: datetime | None = None
        self._measuring: asyncio.Task[None] | None = None
        # Run after each measurement that succeeded (a view publishes itself again).
        self.on_measured: list[Callable[[], Awaitable[None]]] = []

    async def vms(self) -> list[VmOverview]:
        """Every VM the hypervisor lists (its order), then the VMs only the catalogue knows
        (by name), each with its snapshots counted and the operation holding it, if any."""
        vms = await self._hv.list_vms()
        running = await self._catalogue.running_operations()
        tallies = await self._catalogue.snapshot_tallies()
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

    def usage(self) -> UsageReport | None:
        """The last storage measurement (None: none finished yet, or usage is not measured
        here). Starts a new one in the background when it is older than ``USAGE_MAX_AGE``."""
        if self._usage is None:
            return None
        now = self._clock.now()
        stale = self._tried_at is None or now - self._tried_at >= USAGE_MAX_AGE
        if stale and self._measuring is None:
            self._tried_at = now
            self._measuring = asyncio.create_task(self._measure(self._usage), name="home-usage")
        return self._measured

    async def _measure(self, usage: UsageService) -> None:
        try:
            self._measured = await usage.report(None)
        except CoreError as exc:
            logger.warning("storage usage for the Home tab not measured: %s", exc)
            return
        except Exception:
            logger.exception("measuring storage usage for the Home tab failed")
            return
        finally:
            self._measuring = None
        for hook in list(self.on_measured):
            try:
                await hook()
            except Exception:
                logger.exception("a view's refresh after a usage measurement failed")

    async def close(self) -> None:
        """Stop a measurement still running (at shutdown)."""
        task, self._measuring = self._measuring, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
