"""Virtual machines as the domain sees them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class VmState(enum.Enum):
    """Run state of a VM, reduced to what an operator acts on."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUT_OFF = "shut off"
    CRASHED = "crashed"
    OTHER = "other"

    @property
    def is_active(self) -> bool:
        """True when a QEMU process exists (running or paused)."""
        return self in (VmState.RUNNING, VmState.PAUSED)


class StateCause(enum.Enum):
    """Why the VM is in its state, as libvirt recorded it: the evidence a crash recovery
    needs to tell a pause snapbot caused from one somebody chose."""

    FROM_SNAPSHOT = "restored from a snapshot"
    BY_USER = "paused by someone"
    SNAPSHOT_SAVE = "paused while a snapshot saved its memory"
    IO_ERROR = "paused on a disk error (a full disk?)"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Vm:
    """A libvirt domain. ``uuid`` is its identity; names can change. ``host`` is the name of
    the configured host it lives on when snapbot serves several (None: the one hypervisor)."""

    uuid: str
    name: str
    state: VmState
    memory_bytes: int
    host: str | None = None


class DiskFormat(enum.Enum):
    """Disk image formats that matter for snapshot support."""

    QCOW2 = "qcow2"
    RAW = "raw"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Disk:
    """One disk of a VM as declared in its XML."""

    target: str
    path: str | None
    format: DiskFormat
    format_name: str
    read_only: bool
    # libvirt's <disk type=...>: "file", "block", "network" or "volume"; where the space a
    # snapshot needs can be measured depends on it.
    source_type: str = "file"


@dataclass(frozen=True, slots=True)
class VmFacts:
    """What the snapshot planner needs to know about a VM and its host."""

    vm: Vm
    disks: tuple[Disk, ...]
    uses_pflash: bool
    has_external_snapshots: bool
    has_checkpoints: bool
    libvirt_version: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class StoragePlace:
    """One place a snapshot of the VM writes to (a filesystem, a storage pool, the inside of a
    block device), the disks whose snapshot data goes there, and its free space: None when it
    cannot be known here, ``unknown_because`` then says why."""

    where: str
    disks: tuple[str, ...]
    available_bytes: int | None
    unknown_because: str | None = None


@dataclass(frozen=True, slots=True)
class FreeSpace:
    """Free space on the filesystem that will receive a snapshot's data."""

    path: str
    available_bytes: int
