"""The offsite copy's use cases: copy what is new, verify the copy on its own, apply deletions
after their delay, and say what is copied and pending (``core.domain.offsite``).

A backup's reply does not wait for the copy: ``copy_soon`` starts it in the background (one at
a time; a request arriving meanwhile runs one more pass after it), and its outcome is reported
by ``view``. The same pass also applies deletions, so a prune is marked offsite within minutes
and really deleted there only after ``delete_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from core.domain.backups import PointRef, VerifyReport
from core.domain.offsite import CopyReport, DeletionReport, MarkedPoint, OffsiteView
from core.errors import CoreError, InvalidInput
from core.ports import Clock, OffsiteStore

logger = logging.getLogger(__name__)

# How often the copy runs on its own, besides after each backup: catches what a copy that
# failed (the object storage was down) or a process that stopped mid-way left behind.
DEFAULT_INTERVAL = timedelta(hours=1)


class OffsiteService:
    def __init__(self, store: OffsiteStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._last_copy: CopyReport | None = None
        self._last_copy_at: datetime | None = None
        self._last_error: str | None = None

    @property
    def where(self) -> str:
        return self._store.where

    @property
    def delete_after(self) -> timedelta:
        return self._store.delete_after

    async def copy_new(self) -> CopyReport:
        """Upload the restore points and pieces the copy lacks (one copy at a time)."""
        async with self._lock:
            started = self._clock.now()
            try:
                report = await self._store.copy_new()
            except CoreError as error:
                self._last_error = str(error)
                raise
            seconds = (self._clock.now() - started).total_seconds()
            report = CopyReport(
                report.points_copied,
                report.chunks_uploaded,
                report.bytes_uploaded,
                report.points_present,
                report.points_skipped,
                seconds,
            )
            self._last_copy, self._last_copy_at, self._last_error = report, started, None
            if report.points_copied:
                logger.info(
                    "offsite copy: %d restore points, %d pieces, %d bytes uploaded to %s",
                    len(report.points_copied),
                    report.chunks_uploaded,
                    report.bytes_uploaded,
                    self.where,
                )
            for skipped in report.points_skipped:
                logger.warning("offsite copy skipped %s", skipped)
            return report

    async def apply_deletions(self) -> DeletionReport:
        """Mark points deleted from the store; delete those marked long enough ago."""
        async with self._lock:
            report = await self._store.apply_deletions(self._clock.now())
        if report.deleted:
            logger.info(
                "offsite copy: %d restore points deleted after their delay, %d pieces freed",
                len(report.deleted),
                report.chunks_deleted,
            )
        if report.held_back and report.newly_marked == ():
            logger.debug("offsite deletions held back: %s", report.held_back)
        return report

    async def verify(self, point: PointRef | None = None) -> VerifyReport:
        """Download every piece the copy's points need and check it against its name;
        damaged pieces are set aside offsite so the next copy uploads them again."""
        async with self._lock:
            return await self._store.verify_copy(point)

    async def bring_back(self, vm_name: str, label: str) -> MarkedPoint:
        """Undo a mistaken delete or prune: the point ``label`` of ``vm_name``, deleted from
        the store and still kept offsite (waiting for its delayed deletion), is written back
        into the store and its deletion mark removed. The VM's next listing adopts it."""
        marked = (await self._store.status()).marked
        found = [m for m in marked if m.vm_name == vm_name and label in (m.label, m.ref.point_id)]
        if not found:
            waiting = ", ".join(f"{m.vm_name} {m.label or m.ref.point_id}" for m in marked)
            raise InvalidInput(
                f"the offsite copy keeps no deleted restore point {label!r} of {vm_name}"
                + (f"; deleted points it still keeps: {waiting}" if waiting else "")
            )
        point = max(found, key=lambda m: m.marked_at)
        async with self._lock:
            await self._store.fetch_point(point.ref)
            await self._store.apply_deletions(self._clock.now())
        logger.info("restore point %s of %s brought back from the offsite copy", label, vm_name)
        return point

    async def view(self) -> OffsiteView:
        status = await self._store.status()
        return OffsiteView(
            status,
            self._last_copy,
            self._last_copy_at,
            self._last_error,
            self._task is not None and not self._task.done(),
        )

    async def run_once(self) -> None:
        """A copy and a deletion pass; failures are recorded for ``view`` and logged."""
        try:
            await self.copy_new()
            await self.apply_deletions()
        except CoreError as error:
            self._last_error = str(error)
            logger.warning("offsite copy failed: %s", error)

    def copy_soon(self) -> None:
        """Start a copy in the background (after a backup or a deletion); never waits."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._passes(), name="offsite-copy")

    async def _passes(self) -> None:
        while True:
            self._again = False
            await self.run_once()
            if not self._again:
                return

    async def run_periodically(self, interval: timedelta = DEFAULT_INTERVAL) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(interval.total_seconds())

    async def close(self) -> None:
        """Stop a background copy: what it uploaded stays valid (each object is whole, the
        manifest goes last), and the next copy uploads the rest."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
