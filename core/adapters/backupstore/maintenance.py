"""Garbage collection and verification of a backup store.

Garbage collection is mark and sweep, as in Proxmox Backup Server: mark every chunk any point's
index refers to, then sweep the others, but only those older than a cut-off. A writer running
beside the collection may be about to refer to a chunk no manifest names yet; every chunk it
stores or reuses is touched after it registered, so the cut-off (the older of the collection's
start and the oldest running writer's, minus a margin for clocks that disagree, such as an NFS
server's) spares all of them.
"""

from __future__ import annotations

import contextlib
import enum
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from core.adapters.backupstore.index import INDEX_SUFFIX, decode_index
from core.adapters.backupstore.manifest import MANIFEST_NAME
from core.adapters.backupstore.points import PointFiles
from core.adapters.backupstore.writers import filesystem_now, oldest_running_writer
from core.domain.backups import (
    BackupDamaged,
    DiskIndex,
    GcReport,
    PointRef,
    RestorePointNotFound,
    VerifyReport,
    points_needing,
)
from core.errors import InvalidInput


def collect_garbage(files: PointFiles, safety_margin: timedelta) -> GcReport:
    started_ns = filesystem_now(files.root)
    oldest_writer = oldest_running_writer(files.root)
    cutoff_ns = min(started_ns, oldest_writer if oldest_writer is not None else started_ns)
    cutoff_ns -= int(safety_margin.total_seconds() * 1_000_000_000)

    referenced: set[str] = set()
    points = 0
    for directory in files.point_dirs():
        if not _is_point_dir(directory):
            continue  # not snapbot's: neither read nor removed
        if not (directory / MANIFEST_NAME).exists():
            # A point whose writer died before its manifest. One still being written is younger
            # than the cut-off and stays; one being deleted is gone or goes anyway.
            with contextlib.suppress(FileNotFoundError):
                if directory.stat().st_mtime_ns < cutoff_ns:
                    shutil.rmtree(directory, ignore_errors=True)
            continue
        points += 1
        for index in _indexes_in(directory):
            referenced |= index.stored_digests()

    removed = freed = kept_young = 0
    with files.chunks.sweeping():
        for chunk in files.chunks.chunks():
            if chunk.digest in referenced:
                continue
            if chunk.mtime_ns >= cutoff_ns:
                kept_young += 1
                continue
            chunk.path.unlink(missing_ok=True)
            removed += 1
            freed += chunk.size
    temps = 0
    for temp in files.chunks.stale_temp_files(cutoff_ns):
        temp.unlink(missing_ok=True)
        temps += 1
    return GcReport(points, len(referenced), removed, freed, kept_young, temps)


def _is_point_dir(directory: Path) -> bool:
    try:
        PointRef(directory.parent.name, directory.name)
    except InvalidInput:
        return False
    return True


def _indexes_in(directory: Path) -> Iterator[DiskIndex]:
    """Every index of a finished point, read from the files themselves: a damaged one stops
    the collection rather than letting it sweep chunks the point may need."""
    for path in sorted(directory.glob(f"*{INDEX_SUFFIX}")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # the point is being deleted
        try:
            yield decode_index(path.name.removesuffix(INDEX_SUFFIX), data)
        except BackupDamaged as error:
            raise BackupDamaged(
                f"{directory.parent.name}/{directory.name}: {error.what}",
                f"{error.reason}; garbage collection stopped before sweeping anything. Run "
                "verify, then delete that restore point if it cannot be repaired",
            ) from None


def verify(files: PointFiles, only: PointRef | None = None) -> VerifyReport:
    """Re-reads every chunk the points need (all points, or ``only``) and re-hashes it. A
    damaged chunk is renamed ``<digest>.bad``; every point needing it is reported."""
    indexes: dict[PointRef, list[DiskIndex]] = {}
    damaged_files: list[str] = []
    damaged_refs: set[PointRef] = set()
    for directory in files.point_dirs():
        if not (directory / MANIFEST_NAME).exists():
            continue
        if not _is_point_dir(directory):
            continue
        ref = PointRef(directory.parent.name, directory.name)
        try:
            manifest = files.manifest(ref)
            indexes[ref] = [files.index(manifest, disk.target) for disk in manifest.disks]
            for blob in manifest.blobs:
                files.read_blob(ref, blob.name)
        except RestorePointNotFound:
            indexes.pop(ref, None)  # deleted while being read
        except BackupDamaged as error:
            damaged_files.append(f"{ref.vm_uuid}/{ref.point_id}: {error}")
            damaged_refs.add(ref)
            indexes.setdefault(ref, [])
    if only is not None and only not in indexes:
        files.manifest(only)  # raises RestorePointNotFound
    checked = [only] if only is not None else sorted(indexes)

    def check(digest: str) -> int | ChunkFault:
        try:
            return len(files.chunks.read(digest))
        except BackupDamaged:
            if not files.chunks.path(digest).exists():
                return ChunkFault.MISSING
            files.chunks.quarantine(digest)
            return ChunkFault.DAMAGED

    return verify_chunks(indexes, checked, damaged_files, damaged_refs, check)


class ChunkFault(enum.Enum):
    MISSING = "missing"
    DAMAGED = "damaged"


def verify_chunks(
    indexes: Mapping[PointRef, Sequence[DiskIndex]],
    checked: Sequence[PointRef],
    damaged_files: Sequence[str],
    damaged_refs: set[PointRef],
    check: Callable[[str], int | ChunkFault],
) -> VerifyReport:
    """The chunk half of a verification, wherever the chunks are (this store, its offsite
    copy): ``check`` re-reads one chunk and returns its length, or what is wrong with it
    (having set a damaged one aside). Every point needing a bad chunk is reported."""
    needed: set[str] = set()
    for ref in checked:
        for index in indexes[ref]:
            needed |= index.stored_digests()
    damaged: list[str] = []
    missing: list[str] = []
    bytes_checked = 0
    for digest in sorted(needed):
        result = check(digest)
        if result is ChunkFault.MISSING:
            missing.append(digest)
        elif result is ChunkFault.DAMAGED:
            damaged.append(digest)
        else:
            bytes_checked += result
    affected = set(points_needing(indexes, damaged + missing)) | (damaged_refs & set(checked))
    return VerifyReport(
        points_checked=tuple(checked),
        chunks_checked=len(needed),
        bytes_checked=bytes_checked,
        damaged_chunks=tuple(damaged),
        missing_chunks=tuple(missing),
        damaged_points=tuple(sorted(affected)),
        damaged_files=tuple(damaged_files),
    )
