"""Storage usage over the fake hypervisor, file-backed fake disks, a real backup store and a
real SQLite catalogue: the figures ``/snapshot usage`` shows, the daily history, forecasts and
what a delete or prune would free, as an operator would check them."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.charts import MatplotlibCharts
from core.bootstrap import Core
from core.catalogue.store import TortoiseCatalogue
from core.domain.snapshot import SnapshotKind
from core.domain.usage import HISTORY_DAYS, PlaceRole, SampleKind
from core.errors import VmNotFound
from core.services.usage import UsageService
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess

WEB = "11111111-1111-1111-1111-111111111111"
WEB2 = "22222222-2222-2222-2222-222222222222"
MiB = 1024 * 1024
GiB = 1024 * MiB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 3, 0, tzinfo=UTC))


@pytest.fixture
def usage(
    services: Services,
    catalogue: TortoiseCatalogue,
    backup_store: DirectoryBackupStore,
    clock: ManualClock,
) -> UsageService:
    return UsageService(services.hv, catalogue, clock, MatplotlibCharts(), backup_store)


def chunk_bytes(store: DirectoryBackupStore) -> int:
    return sum(
        p.stat().st_size
        for p in (store.root / ".chunks").rglob("*")
        if p.is_file() and len(p.name) == 64
    )


async def test_report_shows_memory_states_restore_points_and_every_place(
    core: Core,
    services: Services,
    fake_disks: FakeDiskAccess,
    usage: UsageService,
    backup_store: DirectoryBackupStore,
) -> None:
    await core.snapshots.create_snapshot("web-01", "before-upgrade", actor=ALICE)
    fake_disks.write(WEB, 0, os.urandom(4 * MiB))
    assert core.backups is not None
    await core.backups.create_backup("web-01", "night-1", actor=ALICE)
    fake_disks.write(WEB, 4 * MiB, os.urandom(4 * MiB))
    await core.backups.create_backup("web-01", "night-2", actor=ALICE)

    report = await usage.report(None)

    web = next(v for v in report.vms if v.vm_name == "web-01")
    assert web.full_snapshots == 1
    assert web.memory_state_bytes == 128 * MiB  # the fake saves half the VM's memory
    assert web.disk_bytes == services.hv.vms[WEB].disk_bytes
    assert web.backup.points == 2
    assert web.backup.logical_bytes == 2 * 16 * MiB
    # Both points' chunks are this VM's alone: deleting all of them frees everything stored.
    assert web.backup.exclusive_bytes == chunk_bytes(backup_store)
    assert {v.vm_name for v in report.vms} == {"web-01", "web-02", "db-01"}
    store = report.store
    assert store is not None
    assert store.points == 2
    assert store.stored_bytes == chunk_bytes(backup_store)
    # Random data: the second point re-uses the first 4 MiB; nothing compresses.
    assert store.unique_bytes == 8 * MiB
    assert store.referenced_bytes == 12 * MiB
    assert store.dedup_saved_bytes == 4 * MiB
    assert store.zeros_skipped_bytes == 32 * MiB - 12 * MiB
    roles = {f.where: f.role for f in report.filesystems}
    assert roles["/var/lib/fake"] is PlaceRole.VM_DISKS
    assert roles[str(backup_store.root)] is PlaceRole.BACKUP_STORE
    fake_fs = next(f for f in report.filesystems if f.where == "/var/lib/fake")
    assert fake_fs.free_bytes == services.hv.free_bytes
    assert set(fake_fs.vms) == {"web-01", "web-02", "db-01"}


async def test_report_of_one_vm_the_host_and_a_misspelt_name(
    usage: UsageService, services: Services
) -> None:
    one = await usage.report("web-02")
    assert [v.vm_name for v in one.vms] == ["web-02"]
    assert one.vm == "web-02"
    everything = await usage.report(services.hv.uri)
    assert len(everything.vms) == 3
    assert everything.vm is None
    with pytest.raises(VmNotFound) as found:
        await usage.report("web-0l")
    assert "web-01" in found.value.suggestions


async def test_a_second_sample_the_same_day_replaces_the_first_and_old_ones_go(
    usage: UsageService, services: Services, catalogue: TortoiseCatalogue, clock: ManualClock
) -> None:
    await usage.sample_today()
    services.hv.vms[WEB].disk_bytes = 3 * GiB
    clock.current += timedelta(hours=5)
    await usage.sample_today()
    today = clock.current.date()
    rows = await catalogue.usage_samples(today, SampleKind.VM, WEB)
    assert [(s.day, s.disk_bytes) for s in rows] == [(today, 3 * GiB)]
    kinds = {s.kind for s in await catalogue.usage_samples(today)}
    assert kinds == {SampleKind.VM, SampleKind.STORE, SampleKind.FILESYSTEM}

    clock.current += timedelta(days=HISTORY_DAYS)
    await usage.sample_today()
    days = {s.day for s in await catalogue.usage_samples(today - timedelta(days=1))}
    assert days == {clock.current.date()}  # the first day is past the history kept


async def test_history_per_vm_and_in_total_over_the_days_sampled(
    usage: UsageService, services: Services, clock: ManualClock
) -> None:
    for day in range(5):
        services.hv.vms[WEB].disk_bytes = (day + 1) * GiB
        await usage.sample_today()
        clock.current += timedelta(days=1)
    clock.current -= timedelta(days=1)
    history = await usage.history(None, days=90)
    web = next(s for s in history.vms if s.label == "web-01")
    assert [v for _, v in web.points] == [n * GiB for n in range(1, 6)]
    assert len(history.total.points) == 5
    assert history.total.points[-1][1] > history.total.points[0][1]
    assert history.start == clock.current.date() - timedelta(days=89)

    only = await usage.history("web-01", days=3)
    assert [s.label for s in only.vms] == ["web-01"]
    assert len(only.vms[0].points) == 3
    assert only.store is None


async def test_a_filesystem_filling_within_two_weeks_is_flagged(
    usage: UsageService, services: Services, clock: ManualClock
) -> None:
    services.hv.free_bytes = 100 * GiB
    for _day in range(10):
        await usage.sample_today()
        services.hv.free_bytes -= 5 * GiB
        clock.current += timedelta(days=1)
    clock.current -= timedelta(days=1)
    forecasts = {f.where: f for f in await usage.forecasts()}
    fake = forecasts["/var/lib/fake"]
    # 55 GiB free on the last day, 5 GiB a day: 11 days left.
    assert fake.bytes_per_day == pytest.approx(5 * GiB)
    assert fake.days_left == pytest.approx(11)
    assert fake.soon
    report = await usage.report(None)
    assert [f.where for f in report.filling] == ["/var/lib/fake"]


async def test_prune_estimate_is_exact_for_memory_and_store_and_estimates_disks(
    core: Core,
    fake_disks: FakeDiskAccess,
    usage: UsageService,
    services: Services,
    backup_store: DirectoryBackupStore,
) -> None:
    assert core.backups is not None
    await core.snapshots.create_snapshot("web-01", "a", actor=ALICE)
    await core.snapshots.create_snapshot("web-01", "b", actor=ALICE)
    services.hv.vms[WEB].disk_bytes = 2 * GiB
    shared = os.urandom(4 * MiB)
    fake_disks.write(WEB, 0, shared)
    fake_disks.write(WEB2, 0, shared)
    await core.backups.create_backup("web-02", "shared", actor=ALICE)
    fake_disks.write(WEB, 4 * MiB, os.urandom(4 * MiB))
    await core.backups.create_backup("web-01", "own", actor=ALICE)
    records = {s.label: s for s in await services.catalogue.snapshots()}

    estimate = await usage.prune_estimate([records["a"], records["own"]])

    assert estimate.memory_bytes == 128 * MiB
    # Only web-01's second 4 MiB is its own; the first chunk is also web-02's.
    # Two chunks of random data in the store, the same size on disk: one is web-01's alone.
    assert estimate.store_bytes == chunk_bytes(backup_store) // 2
    # 2 GiB image, 256 MiB of memory states, two snapshots and the current state: a third each.
    assert estimate.disk_estimate_bytes == (2 * GiB - 256 * MiB) // 3
    assert estimate.is_estimate
    assert records["a"].kind is SnapshotKind.FULL

    just_store = await usage.prune_estimate([records["own"]])
    assert not just_store.is_estimate
    assert just_store.total_bytes == just_store.store_bytes == estimate.store_bytes


async def test_chart_is_a_png(usage: UsageService, clock: ManualClock) -> None:
    for _day in range(4):
        await usage.sample_today()
        clock.current += timedelta(days=1)
    png = await usage.chart()
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 5000
