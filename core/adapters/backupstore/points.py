"""Restore points on disk: ``points/<vm-uuid>/<point-id>/`` holding ``manifest.json``, one
``<target>.idx`` per disk and one ``<name>.blob`` per extra file (UEFI variables, TPM state).

Writing a point stores its chunks first, then its indexes and blobs, then the manifest, each
atomically. A point exists when its manifest does: a write killed at any moment leaves no half
point, only a directory without a manifest and chunks nothing refers to, which the next
garbage collection removes.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from core.adapters.backupstore.chunks import ChunkStore
from core.adapters.backupstore.files import fsync_directory, replacing, write_atomically
from core.adapters.backupstore.image_files import FileDiskWriter
from core.adapters.backupstore.index import INDEX_SUFFIX, decode_index, encode_index
from core.adapters.backupstore.manifest import MANIFEST_NAME, decode_manifest, encode_manifest
from core.adapters.backupstore.writers import registered_writer
from core.domain.backups import (
    CHUNK_SIZE,
    BackupDamaged,
    BackupSource,
    BlobRecord,
    DiskIndex,
    DiskReader,
    DiskRecord,
    DiskWriter,
    Manifest,
    PointRef,
    RestorePointNotFound,
    TransferFigures,
    check_file_name,
    chunk_count,
    new_point_id,
)
from core.errors import InvalidInput

logger = logging.getLogger(__name__)

POINTS_DIR = "points"
BLOB_SUFFIX = ".blob"


class PointFiles:
    """Reads and writes restore points in one store directory. Blocking: the async store runs
    every call in its thread pool."""

    def __init__(self, root: Path, chunk_size: int = CHUNK_SIZE) -> None:
        self.root = root
        self.chunk_size = chunk_size
        self._zeros = bytes(chunk_size)
        self.chunks = ChunkStore(root)
        self.points_dir = root / POINTS_DIR
        self.points_dir.mkdir(parents=True, exist_ok=True)

    # --- layout ---------------------------------------------------------------------------

    def point_dir(self, ref: PointRef) -> Path:
        return self.points_dir / ref.vm_uuid / ref.point_id

    def point_ids(self, vm_uuid: str) -> set[str]:
        vm_dir = self.points_dir / vm_uuid
        if not vm_dir.is_dir():
            return set()
        return {p.name for p in vm_dir.iterdir() if (p / MANIFEST_NAME).exists()}

    def stored_vms(self) -> list[str]:
        """The VMs with a directory of points (possibly empty: it is never removed)."""
        return sorted(p.name for p in self.points_dir.iterdir() if p.is_dir())

    def point_dirs(self) -> Iterator[Path]:
        """Every point directory, finished (with a manifest) or not, oldest first per VM."""
        for vm_dir in sorted(self.points_dir.iterdir()):
            if vm_dir.is_dir():
                yield from (p for p in sorted(vm_dir.iterdir()) if p.is_dir())

    # --- writing --------------------------------------------------------------------------

    def write_point(self, source: BackupSource, created_at: datetime | None = None) -> Manifest:
        created = created_at or datetime.now(UTC)
        ref = PointRef(source.vm_uuid, new_point_id(created))
        directory = self.point_dir(ref)
        with registered_writer(self.root, f"backup of {source.vm_name} ({ref.point_id})"):
            directory.mkdir(parents=True)
            new_chunks: set[str] = set()
            try:
                disks = tuple(
                    self._write_disk(directory, target, disk, new_chunks)
                    for target, disk in source.disks.items()
                )
                blobs = tuple(
                    self._write_blob(directory, name, data) for name, data in source.blobs.items()
                )
                # Everything the manifest refers to is durable before the manifest exists.
                self.chunks.sync(new_chunks)
                fsync_directory(directory)
                manifest = Manifest(
                    ref=ref,
                    vm_name=source.vm_name,
                    created_at=created,
                    kind=source.kind,
                    domain_xml=source.domain_xml,
                    disks=disks,
                    blobs=blobs,
                    description=source.description,
                    label=source.label,
                    created_by=source.created_by,
                    consistency=source.consistency,
                )
                write_atomically(directory / MANIFEST_NAME, encode_manifest(manifest))
                fsync_directory(directory.parent)
            except BaseException:
                # Chunks already stored stay: the next write may reuse them, GC removes them if
                # not. Only the unfinished point goes.
                shutil.rmtree(directory, ignore_errors=True)
                raise
        return manifest

    def _write_disk(
        self, directory: Path, target: str, disk: DiskReader, new_chunks: set[str]
    ) -> DiskRecord:
        """Stores one disk's chunks and writes its index; adds the chunks it stored (rather
        than found) to ``new_chunks``."""
        started = time.monotonic()
        digests: list[str | None] = []
        read = new = stored = 0
        size = disk.size
        for number in range(chunk_count(size, self.chunk_size)):
            offset = number * self.chunk_size
            length = min(self.chunk_size, size - offset)
            if disk.reads_as_zeros(offset, length):
                digests.append(None)
                continue
            data = disk.read(offset, length)
            if len(data) != length:
                raise InvalidInput(
                    f"disk {target} gave {len(data)} bytes at offset {offset}, not {length}"
                )
            read += length
            if data == self._zeros[:length]:
                digests.append(None)
                continue
            digest = hashlib.sha256(data).hexdigest()
            took = self.chunks.insert(digest, data)
            if took:
                new += length
                stored += took
                new_chunks.add(digest)
            digests.append(digest)
        index = DiskIndex(target, size, tuple(digests), self.chunk_size)
        write_atomically(directory / f"{target}{INDEX_SUFFIX}", encode_index(index))
        figures = TransferFigures(read, new, stored, time.monotonic() - started)
        return DiskRecord(target, size, len(digests), index.checksum(), figures)

    def _write_blob(self, directory: Path, name: str, data: bytes) -> BlobRecord:
        write_atomically(directory / f"{name}{BLOB_SUFFIX}", data)
        return BlobRecord(name, len(data), hashlib.sha256(data).hexdigest())

    # --- reading --------------------------------------------------------------------------

    def manifest(self, ref: PointRef) -> Manifest:
        path = self.point_dir(ref) / MANIFEST_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RestorePointNotFound(ref.vm_uuid, ref.point_id) from None
        manifest = decode_manifest(data, f"{ref.vm_uuid}/{ref.point_id}")
        if manifest.ref != ref:
            raise BackupDamaged(f"manifest {ref.vm_uuid}/{ref.point_id}", "names another point")
        return manifest

    def list_points(self, vm_uuid: str | None = None) -> list[Manifest]:
        """Every finished point, newest first. A damaged manifest is logged and left out;
        ``verify`` names it."""
        found: list[Manifest] = []
        for directory in self.point_dirs():
            if vm_uuid is not None and directory.parent.name != vm_uuid:
                continue
            if not (directory / MANIFEST_NAME).exists():
                continue  # unfinished: being written, or its writer died
            try:
                found.append(self.manifest(PointRef(directory.parent.name, directory.name)))
            except (BackupDamaged, InvalidInput) as error:
                logger.warning("Skipping restore point %s: %s", directory, error)
        return sorted(found, key=lambda m: (m.created_at, m.ref.point_id), reverse=True)

    def index(self, manifest: Manifest, target: str) -> DiskIndex:
        record = manifest.disk(target)
        path = self.point_dir(manifest.ref) / f"{target}{INDEX_SUFFIX}"
        try:
            index = decode_index(target, path.read_bytes())
        except FileNotFoundError:
            raise BackupDamaged(f"index of disk {target}", "missing") from None
        if index.checksum() != record.index_checksum or index.size != record.size:
            raise BackupDamaged(f"index of disk {target}", "does not match the manifest")
        return index

    def read_blob(self, ref: PointRef, name: str) -> bytes:
        manifest = self.manifest(ref)
        check_file_name("blob", name)
        record = next((b for b in manifest.blobs if b.name == name), None)
        if record is None:
            names = ", ".join(b.name for b in manifest.blobs) or "none"
            raise InvalidInput(f"restore point {ref.point_id} has no {name!r} ({names})")
        try:
            data = (self.point_dir(ref) / f"{name}{BLOB_SUFFIX}").read_bytes()
        except FileNotFoundError:
            raise BackupDamaged(f"{name} of {ref.point_id}", "missing") from None
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise BackupDamaged(f"{name} of {ref.point_id}", "checksum mismatch")
        return data

    def restore_disk(self, ref: PointRef, target: str, writer: DiskWriter) -> int:
        """Writes the disk as it was through ``writer``: its data, and zeros wherever the point
        has none (the writer may hold older data there). Every chunk is read and checked
        against its digest before the first write, so a damaged point changes nothing.
        Returns the bytes of data written."""
        with registered_writer(self.root, f"restore of {ref.point_id} disk {target}"):
            manifest = self.manifest(ref)
            index = self.index(manifest, target)
            if writer.size != index.size:
                raise InvalidInput(
                    f"disk {target} is {writer.size} bytes, restore point {ref.point_id} holds "
                    f"{index.size}: resize it first"
                )
            # Touched up front: should the point be deleted while this runs, garbage collection
            # sees the chunks as young and leaves them to this reader.
            missing = [d for d in sorted(index.stored_digests()) if not self.chunks.touch(d)]
            if missing and not (self.point_dir(ref) / MANIFEST_NAME).exists():
                # Deleted, and its chunks collected, between reading its manifest and now.
                raise RestorePointNotFound(ref.vm_uuid, ref.point_id)
            if missing:
                raise BackupDamaged(
                    f"disk {target} of {ref.point_id}", f"{len(missing)} chunks missing"
                )
            for stored in sorted(index.stored_digests()):
                self.chunks.read(stored)  # raises BackupDamaged, before anything is written
            written = 0
            for number, chunk in enumerate(index.digests):
                offset = number * index.chunk_size
                if chunk is None:
                    writer.zero(offset, index.chunk_length(number))
                    continue
                data = self.chunks.read(chunk)
                writer.write(offset, data)
                written += len(data)
            writer.flush()
            return written

    def read_disk(self, ref: PointRef, target: str, destination: Path) -> int:
        """Restores the disk into the file ``destination`` (replaced atomically when complete,
        zero chunks left as holes)."""
        manifest = self.manifest(ref)
        size = manifest.disk(target).size
        with replacing(destination) as out:
            out.truncate(size)
            written = self.restore_disk(ref, target, FileDiskWriter(out, size, fresh=True))
        fsync_directory(destination.parent)
        return written

    # --- deleting -------------------------------------------------------------------------

    def delete_point(self, ref: PointRef) -> None:
        """Removes the point's own files; its chunks stay until garbage collection."""
        directory = self.point_dir(ref)
        manifest = directory / MANIFEST_NAME
        if not manifest.exists():
            raise RestorePointNotFound(ref.vm_uuid, ref.point_id)
        # The manifest first: from that instant the point is gone, whatever happens next.
        manifest.unlink()
        fsync_directory(directory)
        shutil.rmtree(directory)
        # The VM's directory stays even when empty: removing it could race a backup of the
        # same VM creating its point there.
        fsync_directory(directory.parent)
