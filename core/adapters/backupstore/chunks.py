"""The chunk files: ``.chunks/<first 4 hex>/<sha256>``, each one chunk of a disk, stored once.

A chunk is named by the SHA-256 of its *uncompressed* data, so the same data always gets the
same name whatever compression did, and a store can tell whether it already holds a chunk
without reading it. On disk it is a small header and then the data, compressed with zstd where
that saves space. The header's CRC-32 over the stored bytes lets anyone check a chunk on its
own (no index needed); verification goes further and re-hashes the data against the name.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import zstandard

from core.adapters.backupstore.files import (
    TEMP_SUFFIX,
    fsync_directory,
    replace_durably,
)
from core.domain.backups import BackupDamaged, check_digest

CHUNKS_DIR = ".chunks"
BAD_SUFFIX = ".bad"
_LOCK_NAME = ".lock"
# Level 1, as Proxmox Backup Server: disk data is mostly incompressible or very compressible,
# and higher levels cost CPU the host's VMs need for little gain.
ZSTD_LEVEL = 1
_MAGIC = b"SBCHUNK1"
_FLAG_ZSTD = 1
# magic, flags, 3 bytes reserved, uncompressed length, CRC-32 of the stored payload
_HEADER = struct.Struct("<8sB3xII")
HEADER_SIZE = _HEADER.size


def encode_chunk(data: bytes) -> bytes:
    compressed = zstandard.compress(data, ZSTD_LEVEL)
    flags, payload = (_FLAG_ZSTD, compressed) if len(compressed) < len(data) else (0, data)
    return _HEADER.pack(_MAGIC, flags, len(data), zlib.crc32(payload)) + payload


def decode_chunk(stored: bytes, digest: str) -> bytes:
    """The chunk's data; ``BackupDamaged`` if the header, the CRC or the digest disagree."""
    if len(stored) < HEADER_SIZE:
        raise BackupDamaged(f"chunk {digest}", f"{len(stored)} bytes, shorter than its header")
    magic, flags, length, crc = _HEADER.unpack_from(stored)
    payload = stored[HEADER_SIZE:]
    if magic != _MAGIC:
        raise BackupDamaged(f"chunk {digest}", "not a snapbot chunk (wrong header)")
    if zlib.crc32(payload) != crc:
        raise BackupDamaged(f"chunk {digest}", "CRC-32 mismatch: the stored bytes changed")
    if flags & _FLAG_ZSTD:
        try:
            data = zstandard.decompress(payload, max_output_size=length)
        except zstandard.ZstdError as error:
            raise BackupDamaged(f"chunk {digest}", f"does not decompress: {error}") from None
    else:
        data = payload
    if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
        raise BackupDamaged(f"chunk {digest}", "content does not match its SHA-256 name")
    return data


@dataclass(frozen=True)
class StoredChunk:
    """A chunk file as garbage collection sees it."""

    digest: str
    path: Path
    size: int
    mtime_ns: int


class ChunkStore:
    """The ``.chunks`` directory of one backup store. Blocking; callers run it in threads."""

    def __init__(self, root: Path) -> None:
        self.directory = root / CHUNKS_DIR
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.directory / digest[:4] / digest

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        # A fresh descriptor each time: flock belongs to the open file, so threads sharing one
        # would release each other's locks.
        fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def sweeping(self) -> AbstractContextManager[None]:
        """Held by garbage collection while it judges and removes chunks, so no chunk is
        touched between the moment it is found old and the moment it is removed."""
        return self._locked(fcntl.LOCK_EX)

    def touch(self, digest: str) -> bool:
        """Marks a chunk as in use now (garbage collection keeps chunks touched after its
        cut-off); False when the chunk is not there."""
        with self._locked(fcntl.LOCK_SH):
            try:
                os.utime(self.path(digest))
            except FileNotFoundError:
                return False
        return True

    def insert(self, digest: str, data: bytes) -> int:
        """Stores the chunk unless the store holds it already. Returns the bytes it took on
        disk (0 when it was there). The file is fsynced; its directory is synced by
        ``sync`` before anything refers to it."""
        # Touching rather than testing for existence: a chunk this write reuses must look
        # young to a garbage collection running beside it.
        if self.touch(digest):
            return 0
        path = self.path(digest)
        path.parent.mkdir(exist_ok=True)
        stored = encode_chunk(data)
        replace_durably(path, stored)
        return len(stored)

    def sync(self, digests: Iterable[str]) -> None:
        """Makes the renames of these new chunks durable: one fsync per directory they went
        to, once per write rather than once per chunk."""
        for prefix in sorted({digest[:4] for digest in digests}):
            fsync_directory(self.directory / prefix)
        fsync_directory(self.directory)

    def read(self, digest: str) -> bytes:
        try:
            stored = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BackupDamaged(
                f"chunk {digest}", "missing (damaged and set aside, or deleted)"
            ) from None
        return decode_chunk(stored, digest)

    def quarantine(self, digest: str) -> Path:
        """Sets a damaged chunk aside as ``<digest>.bad``: kept for inspection, and the next
        write of the same data stores it again because the name is free."""
        path = self.path(digest)
        bad = path.with_name(path.name + BAD_SUFFIX)
        os.replace(path, bad)
        fsync_directory(path.parent)
        return bad

    def chunks(self) -> Iterator[StoredChunk]:
        for sub in sorted(self.directory.iterdir()):
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if len(entry.name) == 64 and entry.is_file():
                    stat = entry.stat()
                    yield StoredChunk(entry.name, Path(entry.path), stat.st_size, stat.st_mtime_ns)

    def stale_temp_files(self, older_than_ns: int) -> Iterator[Path]:
        """Temp files of writes that died before their rename."""
        for sub in self.directory.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.endswith(TEMP_SUFFIX) and entry.stat().st_mtime_ns < older_than_ns:
                    yield Path(entry.path)
