"""Decide, before touching anything, whether and how this host can snapshot or restore a VM.

The rules encode what libvirt actually does on the versions we support (README, "Supported
libvirt versions"); each refusal names the way out, because "unsupported" alone leaves the
operator with nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.domain.snapshot import HypervisorSnapshot
from core.domain.vm import DiskFormat, StoragePlace, VmFacts
from core.errors import InsufficientSpace, SpaceUnknown, Unsupported

MIB = 1024 * 1024
# libvirt 9.3 restored internal snapshots of *shut-off* UEFI (pflash) VMs; before it, none.
PFLASH_INACTIVE_SINCE = (9, 3, 0)
# Room for qcow2 metadata and the guest's writes while the snapshot is being taken.
DISK_ONLY_MARGIN = 64 * MIB


@dataclass(frozen=True, slots=True)
class SnapshotPlan:
    """How a snapshot will be taken."""

    with_memory: bool
    needed_bytes: int
    space_path: str | None


def _version(v: tuple[int, int, int]) -> str:
    return ".".join(str(p) for p in v)


def needed_bytes(facts: VmFacts) -> int:
    """Free space a snapshot needs where its data goes.

    A memory snapshot writes about the guest's RAM (Red Hat: "at least the RAM allocated"); we
    ask for 10 % and 64 MiB on top for the device state and the guest's writes meanwhile.
    """
    if facts.vm.state.is_active:
        ram = facts.vm.memory_bytes
        return ram + max(ram // 10, 0) + DISK_ONLY_MARGIN
    return DISK_ONLY_MARGIN


def check_snapshot_support(facts: VmFacts) -> None:
    """Raise ``Unsupported`` when libvirt on this host cannot take an internal snapshot."""
    name = facts.vm.name
    writable = [d for d in facts.disks if not d.read_only]
    if not writable:
        raise Unsupported(
            name,
            "it has no writable disk",
            "attach a qcow2 disk; read-only disks and CD-ROMs are not captured",
        )
    for disk in writable:
        if disk.format is not DiskFormat.QCOW2:
            raise Unsupported(
                name,
                f"disk {disk.target} is {disk.format_name}, and internal snapshots need qcow2",
                f"shut the VM down and convert it: qemu-img convert -O qcow2 {disk.path or 'DISK'} "
                "NEW.qcow2, then point the disk at NEW.qcow2 with type='qcow2'",
            )
    if facts.has_external_snapshots:
        raise Unsupported(
            name,
            "it already has external snapshots, and mixing external and internal snapshots "
            "on one VM has lost data (libvirt#734)",
            "delete or merge the external snapshots with virsh first",
        )
    if facts.uses_pflash:
        if facts.vm.state.is_active:
            raise Unsupported(
                name,
                "it boots with UEFI (pflash), and libvirt cannot save the memory of a running "
                "UEFI VM in an internal snapshot",
                "shut the VM down and snapshot it while off"
                + (
                    ""
                    if facts.libvirt_version >= PFLASH_INACTIVE_SINCE
                    else f" after upgrading libvirt to {_version(PFLASH_INACTIVE_SINCE)} or "
                    "newer (Debian 12: bookworm-backports)"
                ),
            )
        if facts.libvirt_version < PFLASH_INACTIVE_SINCE:
            raise Unsupported(
                name,
                f"it boots with UEFI (pflash), and libvirt {_version(facts.libvirt_version)} "
                "cannot snapshot UEFI VMs at all",
                f"upgrade libvirt to {_version(PFLASH_INACTIVE_SINCE)} or newer "
                "(Debian 12: bookworm-backports)",
            )


def space_needs(facts: VmFacts, places: Sequence[StoragePlace]) -> list[tuple[StoragePlace, int]]:
    """How much each place must have free for a snapshot now.

    Every writable disk grows by its snapshot's metadata and the guest's writes meanwhile;
    the memory state goes into one image only, the first writable qcow2 disk (QEMU's choice
    of vmstate device), so its place must also hold the RAM.
    """
    writable = [d for d in facts.disks if not d.read_only and d.format is DiskFormat.QCOW2]
    memory_disk = writable[0].target if writable and facts.vm.state.is_active else None
    needs = []
    for place in places:
        need = DISK_ONLY_MARGIN * max(len(place.disks), 1)
        if memory_disk in place.disks:
            need += needed_bytes(facts) - DISK_ONLY_MARGIN
        needs.append((place, need))
    return needs


def plan_snapshot(
    facts: VmFacts, places: Sequence[StoragePlace], *, check_space: bool = True
) -> SnapshotPlan:
    """Check support and space; return the plan or raise ``Unsupported``,
    ``InsufficientSpace`` or ``SpaceUnknown``.

    Every place the snapshot writes to is checked. A place whose space cannot be known (a
    network disk, a remote host without a storage pool) refuses the snapshot unless the user
    chose ``check_space=False``: a full disk pauses the guest mid-snapshot, so guessing is not
    ours to do.
    """
    check_snapshot_support(facts)
    needs = space_needs(facts, places)
    tightest: StoragePlace | None = None
    if check_space:
        unknown = [
            (p.where, p.unknown_because or "not measurable")
            for p, _ in needs
            if p.available_bytes is None
        ]
        for place, need in needs:
            if place.available_bytes is not None and place.available_bytes < need:
                raise InsufficientSpace(facts.vm.name, place.where, need, place.available_bytes)
        if unknown:
            raise SpaceUnknown(facts.vm.name, unknown)
    for place, _ in needs:
        if place.available_bytes is not None and (
            tightest is None or place.available_bytes < (tightest.available_bytes or 0)
        ):
            tightest = place
    return SnapshotPlan(
        with_memory=facts.vm.state.is_active,
        needed_bytes=sum(n for _, n in needs) if needs else needed_bytes(facts),
        space_path=None if tightest is None else tightest.where,
    )


def check_restore_support(facts: VmFacts, target: HypervisorSnapshot) -> None:
    """Raise ``Unsupported`` for restores libvirt cannot do, before the VM is stopped."""
    name = facts.vm.name
    if target.is_external:
        raise Unsupported(
            name,
            "it is an external snapshot, and libvirt before 9.9 cannot revert external snapshots",
            "upgrade libvirt to 9.9 or newer, or restore an internal snapshot",
        )
    if facts.has_checkpoints:
        # Verified on libvirt 9.0: the revert fails with "Device has active dirty bitmaps" and
        # leaves a running VM shut off. Refuse before stopping anything.
        raise Unsupported(
            name,
            "it has backup checkpoints (dirty bitmaps), and reverting an internal snapshot "
            "with bitmaps present fails and leaves the VM shut off",
            "delete the checkpoints with virsh checkpoint-delete while the VM runs "
            "(the next backup will be full), then restore",
        )
