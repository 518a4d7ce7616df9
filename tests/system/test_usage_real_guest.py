"""Storage usage on the real counter guest (issue 10, "Tests"): the figures ``/snapshot
usage`` shows agree with ``qemu-img info`` (the image's allocation on the host and the memory
state its full snapshot saved) and with the backup store's own files (every chunk file under
``.chunks``); what deleting a restore point would free is what garbage collection frees; a
day's sample is recorded and the chart rendered from it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.backupstore.chunks import CHUNKS_DIR
from core.domain.backups import PointRef
from core.domain.snapshot import SnapshotKind
from core.domain.usage import PlaceRole, SampleKind
from core.services.facade import Core
from core.services.usage import UsageService
from tests.conftest import ALICE
from tests.system.conftest import Guest, StoreCore
from tests.system.guest.guest import MIB, guest_write

pytestmark = pytest.mark.system

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES: list[str] = []


@dataclass
class Setup:
    core: Core
    usage: UsageService
    store: DirectoryBackupStore
    root: Path


@pytest.fixture
def setup(store_core: StoreCore) -> Setup:
    assert store_core.core.usage is not None
    return Setup(store_core.core, store_core.core.usage, store_core.store, store_core.root)


@pytest.fixture(scope="module", autouse=True)
def print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\nusage figures:\n  " + "\n  ".join(FIGURES))


def qemu_img_info(disk: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def chunk_files_bytes(root: Path) -> int:
    """The store's own accounting, read independently: every chunk file's size."""
    return sum(p.stat().st_size for p in (root / CHUNKS_DIR).glob("*/*") if len(p.name) == 64)


async def test_usage_agrees_with_qemu_img_and_the_store_files(setup: Setup, guest: Guest) -> None:
    core = setup.core
    assert core.backups is not None
    await core.snapshots.create_snapshot(guest.name, "before", actor=ALICE)
    await asyncio.to_thread(guest_write, guest, 4, 8, "usage-one")
    first = await core.backups.create_backup(guest.name, "night-1", actor=ALICE)
    # Rewrites a chunk the first point holds: that chunk is then the first point's alone
    # (the counter's chunk may or may not have changed in between: time decides, not the test).
    await asyncio.to_thread(guest_write, guest, 4, 4, "usage-two")
    await core.backups.create_backup(guest.name, "night-2", actor=ALICE)

    report = await setup.usage.report(guest.name)
    info = await asyncio.to_thread(qemu_img_info, guest.disk)

    (vm,) = report.vms
    assert vm.vm_name == guest.name
    # The image's allocation on the host, as qemu-img measures it (its snapshot included).
    FIGURES.append(f"disk: usage {vm.disk_bytes}, qemu-img actual-size {info['actual-size']}")
    assert vm.disk_bytes == info["actual-size"]
    # The full snapshot's memory state: what QEMU saved into the image.
    saved = sum(int(s.get("vm-state-size", 0)) for s in info.get("snapshots", []))
    assert saved > 0
    assert vm.memory_state_bytes == saved
    assert vm.full_snapshots == 1

    store = report.store
    assert store is not None
    on_disk = await asyncio.to_thread(chunk_files_bytes, setup.root)
    FIGURES.append(
        f"store: stored {store.stored_bytes}, chunk files {on_disk}, logical "
        f"{store.logical_bytes}, dedup saved {store.dedup_saved_bytes}, compression saved "
        f"{store.compression_saved_bytes}"
    )
    assert store.stored_bytes == on_disk
    assert store.points == vm.backup.points == 2
    assert store.logical_bytes == vm.backup.logical_bytes == 2 * info["virtual-size"]
    assert store.garbage_bytes == 0
    # Both points are this VM's: deleting all of them frees every chunk.
    assert vm.backup.exclusive_bytes == on_disk
    # The second point re-used everything but what the guest changed since the first.
    assert store.dedup_saved_bytes > 0

    places = {f.where: f for f in report.filesystems}
    disk_place = places[str(guest.disk.parent)]
    assert disk_place.role is PlaceRole.VM_DISKS
    assert guest.name in disk_place.vms
    st = os.statvfs(guest.disk.parent)
    assert disk_place.free_bytes is not None
    assert abs(disk_place.free_bytes - st.f_bavail * st.f_frsize) < 256 * MIB
    assert places[str(setup.root)].role is PlaceRole.BACKUP_STORE

    # What deleting the first point would free, exactly: what garbage collection then frees.
    assert first.snapshot.point_id is not None
    first_ref = PointRef(first.snapshot.vm_uuid, first.snapshot.point_id)
    estimate_first = await setup.store.exclusive_bytes([first_ref])
    assert estimate_first > 0  # the chunk the guest rewrote after it
    await setup.store.delete_point(first_ref)
    freed = (await setup.store.collect_garbage()).bytes_freed
    FIGURES.append(f"deleting the first point: predicted {estimate_first}, freed {freed}")
    assert freed == estimate_first
    assert (await setup.store.usage()).stored_bytes == await asyncio.to_thread(
        chunk_files_bytes, setup.root
    )


async def test_prune_preview_figures_and_a_days_sample_and_chart(
    setup: Setup, guest: Guest
) -> None:
    core = setup.core
    assert core.backups is not None
    await core.snapshots.create_snapshot(guest.name, "full-one", actor=ALICE)
    await asyncio.to_thread(guest_write, guest, 4, 4, "sample")
    await core.backups.create_backup(guest.name, "inc-one", actor=ALICE)
    snaps = [
        s for listing in await core.snapshots.list_snapshots(guest.name) for s in listing.snapshots
    ]
    full = next(s for s in snaps if s.kind is SnapshotKind.FULL)
    inc = next(s for s in snaps if s.kind is SnapshotKind.INCREMENTAL)
    info = await asyncio.to_thread(qemu_img_info, guest.disk)
    saved = sum(int(s.get("vm-state-size", 0)) for s in info.get("snapshots", []))

    estimate = await setup.usage.prune_estimate([full, inc])
    assert estimate.memory_bytes == saved
    assert inc.point_id is not None
    assert estimate.store_bytes == await setup.store.exclusive_bytes(
        [PointRef(inc.vm_uuid, inc.point_id)]
    )
    assert estimate.store_bytes == await asyncio.to_thread(chunk_files_bytes, setup.root)
    assert estimate.is_estimate  # the internal snapshot's disk data is an estimate

    await setup.usage.sample_today()
    history = await setup.usage.history(guest.name, days=90)
    (line,) = history.vms
    assert line.label == guest.name
    assert len(line.points) == 1
    png = await setup.usage.chart()
    assert png.startswith(PNG_SIGNATURE)
    kinds = {s.kind for s in history.samples}
    assert SampleKind.VM in kinds
