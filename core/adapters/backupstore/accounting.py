"""What the backup store takes, from its own files: logical and stored sizes, what
deduplication and compression saved, and what deleting a set of points would free.

Read-only and lock-free: a point written or deleted meanwhile is counted or not, as a listing
at that instant would. Indexes are small (32 bytes per 4 MiB chunk); chunk files are only
``stat``ed, never read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator
from pathlib import Path

from core.adapters.backupstore.manifest import MANIFEST_NAME
from core.adapters.backupstore.points import PointFiles
from core.domain.backups import BackupDamaged, DiskIndex, PointRef, RestorePointNotFound
from core.domain.usage import StoreUsage
from core.errors import InvalidInput

logger = logging.getLogger(__name__)


def _point_indexes(files: PointFiles) -> Iterator[tuple[PointRef, int, list[DiskIndex]]]:
    """Every finished point: its ref, logical size and disk indexes. A point that cannot be
    read (damaged, or deleted while being read) is logged and left out; verify names it."""
    for directory in files.point_dirs():
        if not (directory / MANIFEST_NAME).exists():
            continue
        try:
            ref = PointRef(directory.parent.name, directory.name)
            manifest = files.manifest(ref)
            indexes = [files.index(manifest, disk.target) for disk in manifest.disks]
        except RestorePointNotFound:
            continue
        except (BackupDamaged, InvalidInput) as error:
            logger.warning("Usage leaves out restore point %s: %s", directory, error)
            continue
        yield ref, manifest.logical_size, indexes


def _chunk_lengths(index: DiskIndex) -> Iterator[tuple[str, int]]:
    for number, digest in enumerate(index.digests):
        if digest is not None:
            yield digest, index.chunk_length(number)


def store_usage(files: PointFiles) -> StoreUsage:
    points = 0
    logical = referenced = 0
    lengths: dict[str, int] = {}
    for _ref, size, indexes in _point_indexes(files):
        points += 1
        logical += size
        for index in indexes:
            for digest, length in _chunk_lengths(index):
                referenced += length
                lengths[digest] = length
    stored = garbage = chunks = 0
    for chunk in files.chunks.chunks():
        chunks += 1
        stored += chunk.size
        if chunk.digest not in lengths:
            garbage += chunk.size
    free, total = filesystem_space(files.root)
    return StoreUsage(
        where=str(files.root),
        points=points,
        logical_bytes=logical,
        referenced_bytes=referenced,
        unique_bytes=sum(lengths.values()),
        stored_bytes=stored,
        garbage_bytes=garbage,
        chunks=chunks,
        free_bytes=free,
        total_bytes=total,
    )


def exclusive_bytes(files: PointFiles, refs: Collection[PointRef]) -> int:
    """Stored bytes of the chunks that only ``refs`` use: what deleting exactly those points
    frees at the next garbage collection. Unknown points are ignored (already gone)."""
    wanted = set(refs)
    if not wanted:
        return 0
    theirs: set[str] = set()
    others: set[str] = set()
    for ref, _size, indexes in _point_indexes(files):
        into = theirs if ref in wanted else others
        for index in indexes:
            into |= index.stored_digests()
    total = 0
    for digest in theirs - others:
        try:
            total += files.chunks.path(digest).stat().st_size
        except FileNotFoundError:
            continue  # missing already: nothing to free
    return total


def filesystem_space(path: Path) -> tuple[int | None, int | None]:
    """Free bytes (for an unprivileged writer) and total bytes of the filesystem at ``path``."""
    try:
        st = os.statvfs(path)
    except OSError as error:
        logger.warning("Cannot measure the filesystem of %s: %s", path, error)
        return None, None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
