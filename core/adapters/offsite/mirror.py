"""The offsite copy's work, blocking (the async store runs it in its thread pool).

Layout in the bucket, mirroring the store: ``chunks/<sha256>`` (the chunk file's bytes as the
store holds them: compressed, with the header whose CRC lets the object be checked on its own),
``points/<vm-uuid>/<point-id>/`` with ``manifest.json``, ``<target>.idx`` and ``<name>.blob``,
``points/<vm-uuid>/<point-id>/deleted.json`` when the point was deleted from the store and waits
for its delayed deletion, and ``damaged/<sha256>`` for chunks a verification set aside.

A copy lists the bucket once, then uploads, point by point (oldest first), the chunks the bucket
lacks, then the point's indexes and blobs, then its manifest, last: a point exists offsite only
when its manifest does, and by then everything it needs is there. Each object goes in one PUT
(there completely or not at all), so a copy interrupted anywhere and run again uploads exactly
what is missing: nothing twice, nothing left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.adapters.backupstore.chunks import decode_chunk
from core.adapters.backupstore.files import write_atomically
from core.adapters.backupstore.index import INDEX_SUFFIX, decode_index, encode_index
from core.adapters.backupstore.maintenance import ChunkFault, verify_chunks
from core.adapters.backupstore.manifest import MANIFEST_NAME, decode_manifest
from core.adapters.backupstore.points import BLOB_SUFFIX, PointFiles
from core.adapters.backupstore.writers import registered_writer
from core.adapters.offsite.bucket import Bucket, StoredObject
from core.domain.backups import (
    BackupDamaged,
    DiskIndex,
    Manifest,
    PointRef,
    RestorePointNotFound,
    VerifyReport,
)
from core.domain.offsite import (
    CopyReport,
    DeletionReport,
    MarkedPoint,
    OffsiteStatus,
    delete_at,
    due,
)
from core.domain.usage import StoreUsage
from core.errors import InvalidInput

logger = logging.getLogger(__name__)

CHUNKS = "chunks/"
POINTS = "points/"
DAMAGED = "damaged/"
MARK_NAME = "deleted.json"
# A chunk uploaded by a copy that has not yet uploaded the manifest needing it looks
# unreferenced; chunk collection spares chunks younger than this (and clocks that disagree).
GC_SAFETY_MARGIN = timedelta(hours=1)
# Chunk uploads in flight at once during a copy (each up to 4 MiB held in memory).
UPLOADS_IN_FLIGHT = 4


def chunk_key(digest: str) -> str:
    return f"{CHUNKS}{digest}"


def point_prefix(ref: PointRef) -> str:
    return f"{POINTS}{ref.vm_uuid}/{ref.point_id}/"


@dataclass
class Listing:
    """The bucket's objects, read once per pass."""

    chunks: dict[str, StoredObject] = field(default_factory=dict)
    points: dict[PointRef, dict[str, StoredObject]] = field(default_factory=dict)

    @classmethod
    def read(cls, bucket: Bucket, vm_uuid: str | None = None, *, chunks: bool = True) -> Listing:
        listing = cls()
        if chunks:
            for item in bucket.objects(CHUNKS):
                digest = item.key.removeprefix(CHUNKS)
                if len(digest) == 64:
                    listing.chunks[digest] = item
        for item in bucket.objects(POINTS if vm_uuid is None else f"{POINTS}{vm_uuid}/"):
            parts = item.key.removeprefix(POINTS).split("/")
            if len(parts) != 3:
                continue
            try:
                ref = PointRef(parts[0], parts[1])
            except InvalidInput:
                continue  # not snapbot's: neither read nor removed
            listing.points.setdefault(ref, {})[parts[2]] = item
        return listing

    def finished(self) -> set[PointRef]:
        return {ref for ref, names in self.points.items() if MANIFEST_NAME in names}

    def marked(self) -> set[PointRef]:
        return {ref for ref, names in self.points.items() if MARK_NAME in names}


def local_points(files: PointFiles) -> set[PointRef]:
    found: set[PointRef] = set()
    for directory in files.point_dirs():
        if (directory / MANIFEST_NAME).exists():
            try:
                found.add(PointRef(directory.parent.name, directory.name))
            except InvalidInput:
                continue
    return found


# --- reading points from the bucket ------------------------------------------------------------


def read_manifest(bucket: Bucket, ref: PointRef) -> Manifest:
    data = bucket.get(point_prefix(ref) + MANIFEST_NAME)
    if data is None:
        raise RestorePointNotFound(ref.vm_uuid, ref.point_id)
    manifest = decode_manifest(data, f"{ref.vm_uuid}/{ref.point_id} (offsite)")
    if manifest.ref != ref:
        raise BackupDamaged(
            f"manifest {ref.vm_uuid}/{ref.point_id} (offsite)", "names another point"
        )
    return manifest


def read_index(bucket: Bucket, manifest: Manifest, target: str) -> DiskIndex:
    record = manifest.disk(target)
    data = bucket.get(point_prefix(manifest.ref) + f"{target}{INDEX_SUFFIX}")
    if data is None:
        raise BackupDamaged(f"index of disk {target} (offsite)", "missing")
    index = decode_index(target, data)
    if index.checksum() != record.index_checksum or index.size != record.size:
        raise BackupDamaged(f"index of disk {target} (offsite)", "does not match the manifest")
    return index


def read_blob(bucket: Bucket, manifest: Manifest, name: str) -> bytes:
    ref = manifest.ref
    record = next((b for b in manifest.blobs if b.name == name), None)
    if record is None:
        names = ", ".join(b.name for b in manifest.blobs) or "none"
        raise InvalidInput(f"restore point {ref.point_id} has no {name!r} ({names})")
    data = bucket.get(point_prefix(ref) + f"{name}{BLOB_SUFFIX}")
    if data is None:
        raise BackupDamaged(f"{name} of {ref.point_id} (offsite)", "missing")
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise BackupDamaged(f"{name} of {ref.point_id} (offsite)", "checksum mismatch")
    return data


def read_chunk(bucket: Bucket, digest: str) -> bytes:
    """The chunk's stored bytes, checked (CRC, decompression, SHA-256 against its name)."""
    stored = bucket.get(chunk_key(digest))
    if stored is None:
        raise BackupDamaged(f"chunk {digest} (offsite)", "missing")
    decode_chunk(stored, digest)
    return stored


# --- copying ------------------------------------------------------------------------------------


def copy_new(bucket: Bucket, files: PointFiles) -> CopyReport:
    """Uploads every finished point of the store the bucket lacks, and every chunk a point
    needs that the bucket lacks (also for points copied before: a chunk set aside offsite as
    damaged comes back). The store's indexes are read every time; they are small."""
    with ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="offsite-put") as pool:
        return _copy_new(bucket, files, pool)


def _copy_new(bucket: Bucket, files: PointFiles, uploads_pool: ThreadPoolExecutor) -> CopyReport:
    listing = Listing.read(bucket)
    finished = listing.finished()
    copied: list[PointRef] = []
    skipped: list[str] = []
    present = chunks = sent = 0
    for directory in files.point_dirs():
        if not (directory / MANIFEST_NAME).exists():
            continue  # unfinished: being written, or its writer died
        try:
            ref = PointRef(directory.parent.name, directory.name)
        except InvalidInput:
            continue
        try:
            manifest = files.manifest(ref)
            indexes = [files.index(manifest, disk.target) for disk in manifest.disks]
            uploads = [
                (f"{disk.target}{INDEX_SUFFIX}", directory / f"{disk.target}{INDEX_SUFFIX}")
                for disk in manifest.disks
            ] + [
                (f"{b.name}{BLOB_SUFFIX}", directory / f"{b.name}{BLOB_SUFFIX}")
                for b in manifest.blobs
            ]
            for blob in manifest.blobs:
                files.read_blob(ref, blob.name)  # damage is never copied offsite
            needed = sorted(stored_digests(indexes) - listing.chunks.keys())
            for digest, size in _upload_chunks(bucket, files, needed, uploads_pool):
                listing.chunks[digest] = StoredObject(chunk_key(digest), size, _epoch())
                chunks += 1
                sent += size
            if ref in finished:
                # Copied before; its pieces were checked above, so one a verification set
                # aside offsite (damaged there) is uploaded again from the store.
                present += 1
                continue
            there = listing.points.get(ref, {})
            for name, path in uploads:
                if name not in there:
                    data = path.read_bytes()
                    bucket.put(point_prefix(ref) + name, data)
                    sent += len(data)
            manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
            bucket.put(point_prefix(ref) + MANIFEST_NAME, manifest_bytes)
            sent += len(manifest_bytes)
        except (RestorePointNotFound, FileNotFoundError):
            if (directory / MANIFEST_NAME).exists():
                skipped.append(f"{ref.vm_uuid}/{ref.point_id}: a file vanished while copying")
            continue  # deleted from the store while being copied: nothing to keep
        except BackupDamaged as error:
            skipped.append(f"{ref.vm_uuid}/{ref.point_id}: {error}")
            continue
        copied.append(ref)
    return CopyReport(tuple(copied), chunks, sent, present, tuple(skipped))


def _upload_chunks(
    bucket: Bucket, files: PointFiles, digests: list[str], pool: ThreadPoolExecutor
) -> list[tuple[str, int]]:
    """Uploads the chunks, a few at a time (on a distant object store each PUT waits mostly
    on the network). Returns those uploaded and their sizes; when one fails, the others still
    in flight finish, and the first error is raised: the point's manifest is not uploaded."""

    def upload(digest: str) -> int:
        try:
            stored = files.chunks.path(digest).read_bytes()
        except FileNotFoundError:
            raise BackupDamaged(f"chunk {digest}", "missing") from None
        decode_chunk(stored, digest)  # damage is never copied offsite
        bucket.put(chunk_key(digest), stored)
        return len(stored)

    futures = [(digest, pool.submit(upload, digest)) for digest in digests]
    done: list[tuple[str, int]] = []
    failure: BaseException | None = None
    for digest, future in futures:
        try:
            done.append((digest, future.result()))
        except BaseException as error:
            failure = failure or error
    if failure is not None:
        raise failure
    return done


def _epoch() -> datetime:
    return datetime.fromtimestamp(0).astimezone()


# --- bringing a point back -----------------------------------------------------------------


def fetch_point(bucket: Bucket, files: PointFiles, ref: PointRef) -> Manifest:
    """Writes a point kept offsite back into the store (undoing a mistaken delete or prune):
    the chunks the store lacks, checked, then the indexes and blobs, then the manifest, last,
    exactly as a backup writes a point. Everything is downloaded and checked first."""
    manifest = read_manifest(bucket, ref)
    indexes = [read_index(bucket, manifest, d.target) for d in manifest.disks]
    blobs = {b.name: read_blob(bucket, manifest, b.name) for b in manifest.blobs}
    manifest_bytes = bucket.get(point_prefix(ref) + MANIFEST_NAME)
    if manifest_bytes is None:
        raise RestorePointNotFound(ref.vm_uuid, ref.point_id)
    directory = files.point_dir(ref)
    with registered_writer(files.root, f"fetch of {ref.point_id} from the offsite copy"):
        if (directory / MANIFEST_NAME).exists():
            raise InvalidInput(f"restore point {ref.point_id} is in the backup store already")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            new: set[str] = set()
            for digest in sorted(stored_digests(indexes)):
                # Touching keeps a chunk the store has from garbage collection meanwhile.
                if files.chunks.touch(digest):
                    continue
                files.chunks.insert(digest, decode_chunk(read_chunk(bucket, digest), digest))
                new.add(digest)
            files.chunks.sync(new)
            for index in indexes:
                write_atomically(directory / f"{index.target}{INDEX_SUFFIX}", encode_index(index))
            for name, data in blobs.items():
                write_atomically(directory / f"{name}{BLOB_SUFFIX}", data)
            write_atomically(directory / MANIFEST_NAME, manifest_bytes)
        except BaseException:
            if not (directory / MANIFEST_NAME).exists():
                shutil.rmtree(directory, ignore_errors=True)
            raise
    return manifest


# --- verifying ----------------------------------------------------------------------------------


def verify(bucket: Bucket, only: PointRef | None = None) -> VerifyReport:
    """Checks the copy on its own: every manifest's checksum, every index against its manifest,
    every blob, and every chunk a point needs downloaded and re-hashed against its name. A
    damaged chunk is moved to ``damaged/`` so the next copy uploads it again from the store."""
    listing = Listing.read(bucket)
    indexes: dict[PointRef, list[DiskIndex]] = {}
    damaged_files: list[str] = []
    damaged_refs: set[PointRef] = set()
    for ref in sorted(listing.finished()):
        try:
            manifest = read_manifest(bucket, ref)
            indexes[ref] = [read_index(bucket, manifest, d.target) for d in manifest.disks]
            for blob in manifest.blobs:
                read_blob(bucket, manifest, blob.name)
        except RestorePointNotFound:
            indexes.pop(ref, None)  # deleted while being read
        except BackupDamaged as error:
            damaged_files.append(f"{ref.vm_uuid}/{ref.point_id}: {error}")
            damaged_refs.add(ref)
            indexes.setdefault(ref, [])
    if only is not None and only not in indexes:
        raise RestorePointNotFound(only.vm_uuid, only.point_id)
    checked = [only] if only is not None else sorted(indexes)

    def check(digest: str) -> int | ChunkFault:
        stored = bucket.get(chunk_key(digest))
        if stored is None:
            return ChunkFault.MISSING
        try:
            return len(decode_chunk(stored, digest))
        except BackupDamaged:
            bucket.move(chunk_key(digest), f"{DAMAGED}{digest}")
            return ChunkFault.DAMAGED

    return verify_chunks(indexes, checked, damaged_files, damaged_refs, check)


# --- delayed deletion --------------------------------------------------------------------------


def apply_deletions(
    bucket: Bucket,
    files: PointFiles | None,
    now: datetime,
    delay: timedelta,
    margin: timedelta = GC_SAFETY_MARGIN,
) -> DeletionReport:
    """Marks points deleted from the store, unmarks points back in it, deletes points marked
    at least ``delay`` ago (manifest first: from then on the point is gone offsite), then the
    chunks no remaining point needs."""
    listing = Listing.read(bucket)
    finished = listing.finished()
    marked = listing.marked()
    newly: list[PointRef] = []
    unmarked: list[PointRef] = []
    held_back: str | None = None
    local = local_points(files) if files is not None else None
    if local is None:
        held_back = "no local backup store is configured: only points marked earlier are handled"
    elif not local and finished:
        # An empty store next to a full copy is a lost store far more often than a store whose
        # every point was pruned: marking would start the clock on deleting the only copy.
        held_back = (
            "the local backup store holds no restore point at all: nothing was marked for "
            "deletion (a lost store must not empty its offsite copy)"
        )
    else:
        for ref in sorted(finished - local - marked):
            manifest = _manifest_or_none(bucket, ref)
            mark = {
                "marked_at": now.isoformat(),
                "vm_name": manifest.vm_name if manifest else "",
                "label": manifest.label if manifest else "",
            }
            bucket.put(point_prefix(ref) + MARK_NAME, json.dumps(mark).encode())
            newly.append(ref)
        for ref in sorted(marked & local):
            bucket.delete(point_prefix(ref) + MARK_NAME)
            unmarked.append(ref)
    deleted: list[PointRef] = []
    for ref in sorted(marked - (local or set())):
        mark_info = _mark(bucket, ref)
        if mark_info is None or not due(mark_info.marked_at, delay, now):
            continue
        names = listing.points[ref]
        if MANIFEST_NAME in names:
            bucket.delete(point_prefix(ref) + MANIFEST_NAME)
        for name in sorted(names):
            if name not in (MANIFEST_NAME, MARK_NAME):
                bucket.delete(point_prefix(ref) + name)
        bucket.delete(point_prefix(ref) + MARK_NAME)
        deleted.append(ref)
        listing.points.pop(ref, None)
    removed, freed = _collect_chunks(bucket, listing, now - margin) if deleted else (0, 0)
    return DeletionReport(tuple(newly), tuple(unmarked), tuple(deleted), removed, freed, held_back)


def _collect_chunks(bucket: Bucket, listing: Listing, cutoff: datetime) -> tuple[int, int]:
    referenced: set[str] = set()
    for ref in sorted(listing.finished()):
        manifest = _manifest_or_none(bucket, ref)
        if manifest is None:
            continue
        for disk in manifest.disks:
            try:
                referenced |= read_index(bucket, manifest, disk.target).stored_digests()
            except BackupDamaged as error:
                # Sweeping without knowing what this point needs could delete its chunks.
                logger.warning("offsite chunk collection skipped: %s", error)
                return 0, 0
    removed = freed = 0
    for digest, item in sorted(listing.chunks.items()):
        if digest in referenced or item.modified >= cutoff:
            continue
        bucket.delete(item.key)
        removed += 1
        freed += item.size
    return removed, freed


def _manifest_or_none(bucket: Bucket, ref: PointRef) -> Manifest | None:
    try:
        return read_manifest(bucket, ref)
    except (RestorePointNotFound, BackupDamaged):
        return None


@dataclass(frozen=True)
class _MarkInfo:
    marked_at: datetime
    vm_name: str
    label: str


def _mark(bucket: Bucket, ref: PointRef) -> _MarkInfo | None:
    data = bucket.get(point_prefix(ref) + MARK_NAME)
    if data is None:
        return None
    try:
        body = json.loads(data)
        return _MarkInfo(
            datetime.fromisoformat(body["marked_at"]), str(body["vm_name"]), str(body["label"])
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable deletion mark of %s/%s offsite", ref.vm_uuid, ref.point_id)
        return None


# --- status -------------------------------------------------------------------------------------


def status(bucket: Bucket, files: PointFiles | None, delay: timedelta) -> OffsiteStatus:
    listing = Listing.read(bucket)
    finished = listing.finished()
    local = local_points(files) if files is not None else set()
    marked: list[MarkedPoint] = []
    for ref in sorted(listing.marked()):
        info = _mark(bucket, ref)
        if info is not None:
            marked.append(
                MarkedPoint(
                    ref, info.vm_name, info.label, info.marked_at, delete_at(info.marked_at, delay)
                )
            )
    return OffsiteStatus(
        where=bucket.where,
        local_points=len(local),
        offsite_points=len(finished),
        pending=tuple(sorted(local - finished)),
        marked=tuple(marked),
        chunks=len(listing.chunks),
        stored_bytes=sum(i.size for i in listing.chunks.values())
        + sum(i.size for names in listing.points.values() for i in names.values()),
        delete_after=delay,
    )


def stored_digests(indexes: Iterable[DiskIndex]) -> set[str]:
    found: set[str] = set()
    for index in indexes:
        found |= index.stored_digests()
    return found


# --- accounting ---------------------------------------------------------------------------------


def _point_indexes(bucket: Bucket, listing: Listing) -> dict[PointRef, tuple[int, list[DiskIndex]]]:
    found: dict[PointRef, tuple[int, list[DiskIndex]]] = {}
    for ref in sorted(listing.finished()):
        try:
            manifest = read_manifest(bucket, ref)
            indexes = [read_index(bucket, manifest, d.target) for d in manifest.disks]
        except (RestorePointNotFound, BackupDamaged):
            continue  # deleted meanwhile, or damaged (verify names it)
        found[ref] = (manifest.logical_size, indexes)
    return found


def usage(bucket: Bucket) -> StoreUsage:
    """The copy's sizes as ``StoreUsage`` (the bucket has no free space to tell)."""
    listing = Listing.read(bucket)
    logical = referenced = 0
    lengths: dict[str, int] = {}
    points = _point_indexes(bucket, listing)
    for size, indexes in points.values():
        logical += size
        for index in indexes:
            for number, digest in enumerate(index.digests):
                if digest is not None:
                    referenced += index.chunk_length(number)
                    lengths[digest] = index.chunk_length(number)
    return StoreUsage(
        where=bucket.where,
        points=len(points),
        logical_bytes=logical,
        referenced_bytes=referenced,
        unique_bytes=sum(lengths.values()),
        stored_bytes=sum(item.size for item in listing.chunks.values()),
        garbage_bytes=sum(i.size for d, i in listing.chunks.items() if d not in lengths),
        chunks=len(listing.chunks),
        free_bytes=None,
        total_bytes=None,
    )


def exclusive_bytes(bucket: Bucket, refs: Collection[PointRef]) -> int:
    wanted = set(refs)
    if not wanted:
        return 0
    listing = Listing.read(bucket)
    theirs: set[str] = set()
    others: set[str] = set()
    for ref, (_size, indexes) in _point_indexes(bucket, listing).items():
        (theirs if ref in wanted else others).update(stored_digests(indexes))
    return sum(listing.chunks[d].size for d in theirs - others if d in listing.chunks)
