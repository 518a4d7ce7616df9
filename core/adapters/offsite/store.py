"""The offsite copy as the services see it: ``core.ports.OffsiteStore`` (copy, verify, delayed
deletion, status) and ``core.ports.BackupStore`` for reading, so a snapbot configured with only
the bucket lists and restores every point kept there. Every S3 call runs in a bounded thread
pool of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from core.adapters.backupstore.chunks import decode_chunk
from core.adapters.backupstore.points import PointFiles
from core.adapters.offsite import mirror
from core.adapters.offsite.bucket import Bucket
from core.domain.backups import (
    BackupDamaged,
    BackupSource,
    DiskWriter,
    GcReport,
    Manifest,
    PointRef,
    RestorePointNotFound,
    VerifyReport,
)
from core.domain.offsite import CopyReport, DeletionReport, OffsiteStatus, OffsiteUnavailable
from core.domain.usage import StoreUsage
from core.errors import InvalidInput

T = TypeVar("T")

# Uploads and downloads wait on the network, not the CPU; a few in flight, no more, so the
# host's own work is not starved and the object storage is not flooded.
DEFAULT_THREADS = 4


class S3OffsiteStore:
    """A bucket holding the offsite copy of the backup store at ``local_root`` (None: this
    snapbot has no store of its own and only reads the copy)."""

    def __init__(
        self,
        bucket: Bucket,
        local_root: Path | None,
        *,
        delete_after: timedelta,
        threads: int = DEFAULT_THREADS,
        spool_dir: Path | None = None,
    ) -> None:
        self.bucket = bucket
        self.where = bucket.where
        self.delete_after = delete_after
        self._local = PointFiles(local_root) if local_root is not None else None
        self._spool_dir = spool_dir
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="offsite")
        self._closed = False

    async def _run(self, call: Callable[[], T]) -> T:
        if self._closed:
            raise OffsiteUnavailable(self.where, "snapbot is stopping")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    # --- the offsite copy ---------------------------------------------------------------------

    async def copy_new(self) -> CopyReport:
        files = self._local
        if files is None:
            raise InvalidInput(
                "this snapbot has no local backup store (SNAPBOT_BACKUP_DIR) to copy from: "
                "it only reads the offsite copy"
            )
        return await self._run(functools.partial(mirror.copy_new, self.bucket, files))

    async def verify_copy(self, point: PointRef | None = None) -> VerifyReport:
        return await self._run(functools.partial(mirror.verify, self.bucket, point))

    async def apply_deletions(self, now: datetime) -> DeletionReport:
        return await self._run(
            functools.partial(
                mirror.apply_deletions, self.bucket, self._local, now, self.delete_after
            )
        )

    async def fetch_point(self, ref: PointRef) -> Manifest:
        files = self._local
        if files is None:
            raise InvalidInput(
                "this snapbot has no local backup store (SNAPBOT_BACKUP_DIR) to bring a "
                "restore point back into: restore from the offsite copy directly"
            )
        return await self._run(functools.partial(mirror.fetch_point, self.bucket, files, ref))

    async def status(self) -> OffsiteStatus:
        return await self._run(
            functools.partial(mirror.status, self.bucket, self._local, self.delete_after)
        )

    # --- read as a backup store ---------------------------------------------------------------

    async def write_point(self, source: BackupSource) -> Manifest:
        raise InvalidInput(
            "the offsite copy is read-only here: set SNAPBOT_BACKUP_DIR to take incremental "
            "snapshots (they are copied offsite from there)"
        )

    async def list_points(self, vm_uuid: str | None = None) -> list[Manifest]:
        return await self._run(functools.partial(self._list_points, vm_uuid))

    def _list_points(self, vm_uuid: str | None) -> list[Manifest]:
        listing = mirror.Listing.read(self.bucket, vm_uuid, chunks=False)
        found: list[Manifest] = []
        for ref in sorted(listing.finished()):
            try:
                found.append(mirror.read_manifest(self.bucket, ref))
            except (BackupDamaged, RestorePointNotFound):
                continue  # damaged (verify names it) or deleted meanwhile
        return sorted(found, key=lambda m: (m.created_at, m.ref.point_id), reverse=True)

    async def point_ids(self, vm_uuid: str) -> set[str]:
        return await self._run(functools.partial(self._point_ids, vm_uuid))

    def _point_ids(self, vm_uuid: str) -> set[str]:
        listing = mirror.Listing.read(self.bucket, chunks=False)
        return {ref.point_id for ref in listing.finished() if ref.vm_uuid == vm_uuid}

    async def stored_vms(self) -> list[str]:
        return await self._run(self._stored_vms)

    def _stored_vms(self) -> list[str]:
        listing = mirror.Listing.read(self.bucket, chunks=False)
        return sorted({ref.vm_uuid for ref in listing.finished()})

    async def manifest(self, ref: PointRef) -> Manifest:
        return await self._run(functools.partial(mirror.read_manifest, self.bucket, ref))

    async def read_blob(self, ref: PointRef, name: str) -> bytes:
        return await self._run(functools.partial(self._read_blob, ref, name))

    def _read_blob(self, ref: PointRef, name: str) -> bytes:
        return mirror.read_blob(self.bucket, mirror.read_manifest(self.bucket, ref), name)

    async def restore_disk(self, ref: PointRef, target: str, writer: DiskWriter) -> int:
        return await self._run(functools.partial(self._restore_disk, ref, target, writer))

    def _restore_disk(self, ref: PointRef, target: str, writer: DiskWriter) -> int:
        """Every chunk is downloaded and checked into a local spool before the first write,
        so a damaged or missing object changes nothing on the disk being restored."""
        manifest = mirror.read_manifest(self.bucket, ref)
        index = mirror.read_index(self.bucket, manifest, target)
        if writer.size != index.size:
            raise InvalidInput(
                f"disk {target} is {writer.size} bytes, restore point {ref.point_id} holds "
                f"{index.size}: resize it first"
            )
        with tempfile.TemporaryDirectory(prefix="snapbot-offsite-", dir=self._spool_dir) as spool:
            for digest in sorted(index.stored_digests()):
                (Path(spool) / digest).write_bytes(mirror.read_chunk(self.bucket, digest))
            written = 0
            for number, chunk in enumerate(index.digests):
                offset = number * index.chunk_size
                if chunk is None:
                    writer.zero(offset, index.chunk_length(number))
                    continue
                data = decode_chunk((Path(spool) / chunk).read_bytes(), chunk)
                writer.write(offset, data)
                written += len(data)
            writer.flush()
        return written

    async def delete_point(self, ref: PointRef) -> None:
        raise InvalidInput(
            "the offsite copy is read-only here: its points are deleted by the snapbot that "
            "copies to it, after the configured delay"
        )

    async def collect_garbage(self) -> GcReport:
        # Unused chunks offsite are removed by the delayed deletion, not here.
        return GcReport(0, 0, 0, 0, 0, 0)

    async def verify(self, point: PointRef | None = None) -> VerifyReport:
        return await self.verify_copy(point)

    async def usage(self) -> StoreUsage:
        return await self._run(functools.partial(mirror.usage, self.bucket))

    async def exclusive_bytes(self, refs: Collection[PointRef]) -> int:
        return await self._run(
            functools.partial(mirror.exclusive_bytes, self.bucket, frozenset(refs))
        )

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
        self.bucket.close()
