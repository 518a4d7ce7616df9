"""Restore points in the backup store: what one holds, as plain values.

The store keeps a VM's disks outside its images, the way Proxmox Backup Server does: each disk
is cut into fixed chunks named by the SHA-256 of their data, a chunk is stored once however many
restore points use it, and every restore point lists all of its chunks. So every point is
logically full (deleting any other point never breaks it) while the store holds only the data
that changed, and a lost change-tracking bitmap costs a full *read*, never a full *store*.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from core.errors import CoreError, InvalidInput, NotFound

# 4 MiB, as Proxmox Backup Server: large enough that an index stays small (32 bytes per 4 MiB,
# 800 KiB for a 100 GiB disk), small enough that a changed file re-stores little around it.
CHUNK_SIZE = 4 * 1024 * 1024
DIGEST_HEX_LENGTH = 64
_DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Sortable by time in a plain directory listing, unique without coordination between writers.
_POINT_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
_UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Disk targets and blob names become file names inside a restore point's directory.
_FILE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class RestorePointNotFound(NotFound):
    """No restore point with that id in the store for that VM."""

    def __init__(self, vm_uuid: str, point_id: str) -> None:
        super().__init__(f"no restore point {point_id!r} of VM {vm_uuid} in the backup store")
        self.vm_uuid = vm_uuid
        self.point_id = point_id


class BackupDamaged(CoreError):
    """Stored data no longer matches its checksum (or is gone); ``what`` names the piece."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"damaged in the backup store: {what}: {reason}")
        self.what = what
        self.reason = reason


class BackupKind(enum.Enum):
    """How a restore point came to be."""

    # A backup of the VM's disks as they were (running or shut off).
    INCREMENTAL = "incremental"
    # An internal snapshot's disk state moved out of the image (no memory state).
    ARCHIVED = "archived"


def check_digest(digest: str) -> str:
    """A chunk digest, as lower-case hex; anything else would name a file outside the store."""
    if not _DIGEST_PATTERN.match(digest):
        raise InvalidInput(f"not a SHA-256 chunk digest (64 lower-case hex digits): {digest!r}")
    return digest


def check_uuid(vm_uuid: str) -> str:
    if not _UUID_PATTERN.match(vm_uuid):
        raise InvalidInput(f"not a VM UUID (lower-case, 8-4-4-4-12 hex digits): {vm_uuid!r}")
    return vm_uuid


def check_file_name(kind: str, name: str) -> str:
    """Disk targets (``vda``) and blob names (``nvram``) are stored as file names."""
    if not _FILE_NAME_PATTERN.match(name):
        raise InvalidInput(
            f"{kind} {name!r} cannot be stored: use 1-64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def new_point_id(created_at: datetime) -> str:
    """A restore point id: creation time (UTC, to the second) plus 32 random bits."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


@dataclass(frozen=True, order=True)
class PointRef:
    """Names one restore point: the VM's UUID (names change, UUIDs do not) and the point id."""

    vm_uuid: str
    point_id: str

    def __post_init__(self) -> None:
        check_uuid(self.vm_uuid)
        if not _POINT_ID_PATTERN.match(self.point_id):
            raise InvalidInput(
                f"not a restore point id (like 20250301T020000Z-1a2b3c4d): {self.point_id!r}"
            )


@dataclass(frozen=True)
class DiskIndex:
    """One disk of one restore point: its size and the digest of every chunk, in order.

    ``None`` stands for a chunk of zeros: never stored, restored as a hole. The last chunk is
    shorter when the size is not a multiple of the chunk size."""

    target: str
    size: int
    digests: tuple[str | None, ...]
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self) -> None:
        check_file_name("disk target", self.target)
        if self.size < 0 or self.chunk_size <= 0:
            raise InvalidInput(f"disk {self.target}: negative size or chunk size")
        if len(self.digests) != chunk_count(self.size, self.chunk_size):
            raise InvalidInput(
                f"disk {self.target}: {len(self.digests)} chunks listed, a disk of {self.size} "
                f"bytes has {chunk_count(self.size, self.chunk_size)}"
            )
        for digest in self.digests:
            if digest is not None:
                check_digest(digest)

    def chunk_length(self, number: int) -> int:
        return min(self.chunk_size, self.size - number * self.chunk_size)

    def stored_digests(self) -> frozenset[str]:
        return frozenset(d for d in self.digests if d is not None)

    def checksum(self) -> str:
        """SHA-256 over the size, chunk size and every digest: names the disk's content."""
        return index_checksum(self.size, self.chunk_size, self.digests)


def chunk_count(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    return -(-size // chunk_size)


_ZERO_DIGEST_BYTES = bytes(32)


def index_checksum(size: int, chunk_size: int, digests: Iterable[str | None]) -> str:
    outer = hashlib.sha256(f"{size}:{chunk_size}:".encode())
    for digest in digests:
        outer.update(_ZERO_DIGEST_BYTES if digest is None else bytes.fromhex(digest))
    return outer.hexdigest()


@dataclass(frozen=True)
class TransferFigures:
    """What writing a point cost: bytes read from the source, bytes of chunks the store did not
    hold yet (uncompressed), bytes those took on disk (compressed, headers included)."""

    bytes_read: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0

    def __add__(self, other: TransferFigures) -> TransferFigures:
        return TransferFigures(
            self.bytes_read + other.bytes_read,
            self.bytes_new + other.bytes_new,
            self.bytes_stored + other.bytes_stored,
            self.seconds + other.seconds,
        )


@dataclass(frozen=True)
class DiskRecord:
    """A disk as the manifest lists it; the full index is read on demand (it can be large)."""

    target: str
    size: int
    chunk_count: int
    index_checksum: str
    figures: TransferFigures


@dataclass(frozen=True)
class BlobRecord:
    """A small named file kept with the point (UEFI variables ``nvram``, TPM state ``tpm``)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Everything needed to restore a point without snapbot's catalogue."""

    ref: PointRef
    vm_name: str
    created_at: datetime
    kind: BackupKind
    domain_xml: str
    disks: tuple[DiskRecord, ...]
    blobs: tuple[BlobRecord, ...] = ()
    description: str = ""
    label: str = ""
    created_by: str = ""
    consistency: Consistency | None = None

    @property
    def figures(self) -> TransferFigures:
        total = TransferFigures()
        for disk in self.disks:
            total = total + disk.figures
        return total

    @property
    def logical_size(self) -> int:
        return sum(disk.size for disk in self.disks)

    def disk(self, target: str) -> DiskRecord:
        for disk in self.disks:
            if disk.target == target:
                return disk
        names = ", ".join(d.target for d in self.disks) or "none"
        raise InvalidInput(f"restore point {self.ref.point_id} has no disk {target!r} ({names})")


class DiskReader(Protocol):
    """A disk readable as raw bytes at one point in time (an image file, a backup job's NBD
    view, an internal snapshot). Blocking: the store calls it from its own threads, one thread
    per reader at a time."""

    @property
    def size(self) -> int:
        """The disk's virtual size in bytes."""
        ...

    def reads_as_zeros(self, offset: int, length: int) -> bool:
        """True when the range is known to hold only zeros (unallocated, a hole, a zero
        cluster) without reading it; False when it may hold data and must be read."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; raise rather than return fewer."""
        ...


class DiskWriter(Protocol):
    """A disk being restored, written at raw offsets (an image file, a qcow2 image behind an
    NBD server: writing through it keeps the image's own internal snapshots). Blocking, like
    ``DiskReader``."""

    @property
    def size(self) -> int: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def zero(self, offset: int, length: int) -> None:
        """Make the range read as zeros, freeing its space where the format can."""
        ...

    def flush(self) -> None:
        """Everything written is durable once this returns."""
        ...


class Consistency(enum.Enum):
    """How consistent a VM's disks were at the instant they were read."""

    # The guest agent froze the guest's filesystems: as after a clean sync.
    FROZEN = "frozen"
    # Read while running without a freeze: as after a power cut (journals replay on boot).
    CRASH_CONSISTENT = "crash-consistent"
    # Nothing was writing: the VM was shut off.
    SHUT_OFF = "shut off"
    # An internal snapshot's disk state, as consistent as that snapshot was.
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class DiskExport:
    """A VM's disks at one instant, with the configuration to rebuild it: what the hypervisor
    side hands the backup store. ``note`` says why the consistency is what it is (for
    example, why no freeze was possible)."""

    disks: Mapping[str, DiskReader]
    domain_xml: str
    consistency: Consistency
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restore writes: the VM's disks, writable by target, and where they are."""

    vm_name: str
    vm_uuid: str
    disks: Mapping[str, DiskWriter]
    disk_paths: Mapping[str, str]


@dataclass(frozen=True)
class BackupSource:
    """What to write as one restore point: disks readable as raw bytes, by target."""

    vm_uuid: str
    vm_name: str
    kind: BackupKind
    domain_xml: str
    disks: Mapping[str, DiskReader]
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    description: str = ""
    # The catalogue's record, kept in the manifest so a new snapbot pointed at the store lists
    # the point under the same label, creator and consistency.
    label: str = ""
    created_by: str = ""
    consistency: Consistency | None = None

    def __post_init__(self) -> None:
        check_uuid(self.vm_uuid)
        if not self.disks:
            raise InvalidInput(f"VM {self.vm_name}: no disk to back up")
        for target in self.disks:
            check_file_name("disk target", target)
        for name in self.blobs:
            check_file_name("blob", name)


@dataclass(frozen=True)
class GcReport:
    """One garbage collection: what it kept and what it freed."""

    points: int
    chunks_referenced: int
    chunks_removed: int
    bytes_freed: int
    # Unreferenced but young enough that a running writer may be about to reference them.
    chunks_kept_for_writers: int
    # Leftovers of writes that died before their rename, removed with the chunks.
    temp_files_removed: int


@dataclass(frozen=True)
class VerifyReport:
    """One verification: every chunk the verified points need, re-read and re-hashed."""

    points_checked: tuple[PointRef, ...]
    chunks_checked: int
    bytes_checked: int
    # Chunks whose content no longer matches their name: renamed ``<digest>.bad``.
    damaged_chunks: tuple[str, ...]
    missing_chunks: tuple[str, ...]
    # Every point in the store (verified or not) that needs a damaged or missing chunk, or
    # whose own manifest or index is damaged.
    damaged_points: tuple[PointRef, ...]
    damaged_files: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.damaged_chunks or self.missing_chunks or self.damaged_points)


def points_needing(
    indexes: Mapping[PointRef, Sequence[DiskIndex]], digests: Iterable[str]
) -> tuple[PointRef, ...]:
    """The points whose disks use any of ``digests``, in order."""
    wanted = frozenset(digests)
    if not wanted:
        return ()
    return tuple(
        sorted(
            ref
            for ref, disks in indexes.items()
            if any(not wanted.isdisjoint(disk.stored_digests()) for disk in disks)
        )
    )
