"""The backup store as the services see it (``core.ports.BackupStore``): a directory, every
blocking file operation run in a small thread pool of its own, never on the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from core.adapters.backupstore.accounting import exclusive_bytes, store_usage
from core.adapters.backupstore.maintenance import collect_garbage, verify
from core.adapters.backupstore.points import PointFiles
from core.domain.backups import (
    CHUNK_SIZE,
    BackupSource,
    DiskWriter,
    GcReport,
    Manifest,
    PointRef,
    VerifyReport,
)
from core.domain.usage import StoreUsage
from core.errors import CoreError

T = TypeVar("T")


class BackupStoreClosed(CoreError):
    """The store was closed (snapbot is stopping) while a request still came in."""

    def __init__(self, root: str) -> None:
        super().__init__(f"the backup store {root} is closed: snapbot is stopping")


# Two threads: backups are disk- and hash-bound, and the host's VMs need the rest.
DEFAULT_THREADS = 2
# Chunk ages and writer start times are both read from the store's own file time stamps; the
# margin covers filesystems where each client stamps files with its own clock, disagreeing by
# up to this much.
DEFAULT_GC_SAFETY_MARGIN = timedelta(hours=1)


class DirectoryBackupStore:
    """A backup store in one directory (``SNAPBOT_BACKUP_DIR``). Several processes and hosts
    may share it: nothing is kept in memory that the directory does not say."""

    def __init__(
        self,
        root: Path,
        *,
        threads: int = DEFAULT_THREADS,
        gc_safety_margin: timedelta = DEFAULT_GC_SAFETY_MARGIN,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.root = root
        self.gc_safety_margin = gc_safety_margin
        self._files = PointFiles(root, chunk_size)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="backupstore")
        self._closed = False

    async def _run(self, call: Callable[[], T]) -> T:
        if self._closed:
            # A request still arriving while snapbot stops: answered, not crashed.
            raise BackupStoreClosed(str(self.root))
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def write_point(self, source: BackupSource) -> Manifest:
        return await self._run(functools.partial(self._files.write_point, source))

    async def list_points(self, vm_uuid: str | None = None) -> list[Manifest]:
        return await self._run(functools.partial(self._files.list_points, vm_uuid))

    async def point_ids(self, vm_uuid: str) -> set[str]:
        return await self._run(functools.partial(self._files.point_ids, vm_uuid))

    async def stored_vms(self) -> list[str]:
        return await self._run(self._files.stored_vms)

    async def manifest(self, ref: PointRef) -> Manifest:
        return await self._run(functools.partial(self._files.manifest, ref))

    async def restore_disk(self, ref: PointRef, target: str, writer: DiskWriter) -> int:
        return await self._run(functools.partial(self._files.restore_disk, ref, target, writer))

    async def read_disk(self, ref: PointRef, target: str, destination: Path) -> int:
        """Restores the disk into a file (a copy to inspect, a test's check)."""
        return await self._run(functools.partial(self._files.read_disk, ref, target, destination))

    async def read_blob(self, ref: PointRef, name: str) -> bytes:
        return await self._run(functools.partial(self._files.read_blob, ref, name))

    async def delete_point(self, ref: PointRef) -> None:
        await self._run(functools.partial(self._files.delete_point, ref))

    async def collect_garbage(self) -> GcReport:
        return await self._run(
            functools.partial(collect_garbage, self._files, self.gc_safety_margin)
        )

    async def verify(self, point: PointRef | None = None) -> VerifyReport:
        return await self._run(functools.partial(verify, self._files, point))

    async def usage(self) -> StoreUsage:
        return await self._run(functools.partial(store_usage, self._files))

    async def exclusive_bytes(self, refs: Collection[PointRef]) -> int:
        return await self._run(functools.partial(exclusive_bytes, self._files, frozenset(refs)))

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
