"""Incremental snapshots end to end over the fake hypervisor, file-backed fake disks, a real
backup store in a temporary directory and a real SQLite catalogue: what a user of
``/snapshot --incremental``, ``/restore`` and ``/snapshot verify`` would notice."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.bootstrap import Core
from core.catalogue.store import SystemClock
from core.domain.backups import (
    CHUNK_SIZE,
    BackupKind,
    BackupSource,
    Consistency,
    Manifest,
    PointRef,
)
from core.domain.operation import OperationKind, OperationStatus, Stage
from core.domain.retention import RetentionPolicy
from core.domain.schedule import ScheduleTask, parse_when
from core.domain.snapshot import CatalogueStatus, SnapshotKind
from core.domain.vm import VmState
from core.errors import InvalidInput, LabelTaken, SnapshotMissing, VmNotFound
from core.services.backups import BackupService
from core.services.operations import OperationRunner
from core.services.reconcile import Reconciler
from core.services.snapshots import SnapshotService
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess

WEB = "11111111-1111-1111-1111-111111111111"
DB = "33333333-3333-3333-3333-333333333333"
MiB = 1024 * 1024


def backups_of(core: Core) -> BackupService:
    assert core.backups is not None
    return core.backups


async def test_second_backup_stores_only_what_the_guest_changed(
    core: Core, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, os.urandom(8 * MiB))
    stages: list[Stage] = []

    async def progress(stage: Stage) -> None:
        stages.append(stage)

    first = await backups_of(core).create_backup(
        "web-01", "night-1", actor=ALICE, progress=progress
    )
    assert Stage.READING_DISKS in stages
    assert first.figures.bytes_read == 8 * MiB  # the holes were never read
    assert first.figures.bytes_new == 8 * MiB
    assert first.consistency is Consistency.CRASH_CONSISTENT
    assert first.snapshot.kind is SnapshotKind.INCREMENTAL
    assert first.snapshot.logical_bytes == 16 * MiB

    fake_disks.write(WEB, 4 * MiB, os.urandom(CHUNK_SIZE))  # one chunk changes
    second = await backups_of(core).create_backup("web-01", "night-2", actor=ALICE)
    assert second.figures.bytes_read == 8 * MiB
    assert second.figures.bytes_new == CHUNK_SIZE
    assert second.snapshot.added_bytes == CHUNK_SIZE

    listing = await core.snapshots.list_snapshots("web-01")
    kinds = {s.label: s.kind for s in listing[0].snapshots}
    assert kinds == {"night-1": SnapshotKind.INCREMENTAL, "night-2": SnapshotKind.INCREMENTAL}


async def test_a_listing_sync_keeps_incrementals_present(
    core: Core, fake_disks: FakeDiskAccess
) -> None:
    # libvirt never has restore points in the store: a sync must not mark them missing.
    fake_disks.write(WEB, 0, b"data")
    await backups_of(core).create_backup("web-01", "kept", actor=ALICE)
    await core.snapshots.list_snapshots()
    [row] = list((await core.snapshots.list_snapshots("web-01"))[0].snapshots)
    assert row.status is CatalogueStatus.PRESENT


async def test_duplicate_label_is_refused_before_anything_is_read(
    core: Core, fake_disks: FakeDiskAccess
) -> None:
    await core.snapshots.create_snapshot("web-01", "before-upgrade", actor=ALICE)
    with pytest.raises(LabelTaken):
        await backups_of(core).create_backup("web-01", "before-upgrade", actor=ALICE)
    assert ("backup_view", "web-01") not in fake_disks.calls


async def test_restore_in_place_brings_the_disk_back_and_keeps_full_snapshots(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    before = os.urandom(2 * MiB)
    fake_disks.write(WEB, MiB, before)
    await core.snapshots.create_snapshot("web-01", "full-before", actor=ALICE)
    await backups_of(core).create_backup("web-01", "good", actor=ALICE)
    fake_disks.write(WEB, MiB, os.urandom(2 * MiB))  # the guest breaks things
    fake_disks.write(WEB, 12 * MiB, b"new file written after the backup")

    result = await backups_of(core).restore_backup("web-01", "good", actor=ALICE)

    assert fake_disks.read(WEB, MiB, 2 * MiB) == before
    # data written after the backup is gone, not left showing through
    assert fake_disks.read(WEB, 12 * MiB, 64) == bytes(64)
    assert result.safety is not None
    assert result.safety.label.startswith("safety-")
    assert result.vm_state is VmState.RUNNING  # it ran when the point was taken
    labels = {s.label for s in (await core.snapshots.list_snapshots("web-01"))[0].snapshots}
    assert {"full-before", "good", result.safety.label} <= labels
    assert ("stop", WEB) in services.hv.calls


async def test_restoring_a_full_snapshot_through_the_backup_path_is_refused_with_the_way(
    core: Core,
) -> None:
    await core.snapshots.create_snapshot("web-01", "full", actor=ALICE)
    with pytest.raises(InvalidInput, match="full snapshot inside the VM's image"):
        await backups_of(core).restore_backup("web-01", "full", actor=ALICE)


async def test_restore_as_makes_a_copy_beside_the_original(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    data = os.urandom(MiB)
    fake_disks.write(WEB, 0, data)
    await backups_of(core).create_backup("web-01", "copy-me", actor=ALICE)

    result = await backups_of(core).restore_as("web-01", "copy-me", "web-01-copy", actor=ALICE)

    copy = await services.hv.get_vm("web-01-copy")
    assert copy.uuid != WEB
    assert result.created
    assert result.vm_name == "web-01-copy"
    assert result.vm_state is VmState.SHUT_OFF  # a copy is left off: its IPs would clash
    assert fake_disks.read(copy.uuid, 0, MiB) == data
    assert (await services.hv.get_vm("web-01")).state is VmState.RUNNING


async def test_restore_as_refuses_bad_or_taken_names(
    core: Core, fake_disks: FakeDiskAccess
) -> None:
    await backups_of(core).create_backup("web-01", "p", actor=ALICE)
    with pytest.raises(InvalidInput, match="cannot be a VM name"):
        await backups_of(core).restore_as("web-01", "p", "../etc", actor=ALICE)
    with pytest.raises(InvalidInput, match="exists already"):
        await backups_of(core).restore_as("web-01", "p", "web-02", actor=ALICE)


async def test_a_deleted_vm_comes_back_under_its_own_name_and_uuid(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    data = os.urandom(3 * MiB)
    fake_disks.write(DB, 2 * MiB, data)  # db-01 is shut off
    await backups_of(core).create_backup("db-01", "last-good", actor=ALICE)
    # Deleted: undefined, and its disk gone.
    del services.hv.vms[DB]
    fake_disks.disk(DB).unlink()
    with pytest.raises(VmNotFound):
        await services.hv.get_vm("db-01")

    result = await backups_of(core).restore_as("db-01", "last-good", None, actor=ALICE)

    back = await services.hv.get_vm("db-01")
    assert back.uuid == DB
    assert fake_disks.read(DB, 2 * MiB, 3 * MiB) == data
    assert result.vm_state is VmState.SHUT_OFF  # it was shut off when backed up


async def test_recreating_a_vm_that_exists_is_refused_with_the_way(core: Core) -> None:
    await backups_of(core).create_backup("web-01", "p", actor=ALICE)
    with pytest.raises(InvalidInput, match="restore it in place"):
        await backups_of(core).restore_as("web-01", "p", None, actor=ALICE)


async def test_deleting_one_point_never_breaks_another_and_space_comes_back(
    core: Core, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    shared = os.urandom(CHUNK_SIZE)
    fake_disks.write(WEB, 0, shared)
    await backups_of(core).create_backup("web-01", "one", actor=ALICE)
    only_second = os.urandom(CHUNK_SIZE)
    fake_disks.write(WEB, CHUNK_SIZE, only_second)
    await backups_of(core).create_backup("web-01", "two", actor=ALICE)

    # the older point goes; the newer one shares its first chunk
    deleted = await core.snapshots.delete_snapshot("web-01", "one", actor=ALICE)
    assert deleted.freed_bytes == 0  # every chunk of "one" is still needed by "two"
    fake_disks.write(WEB, 0, os.urandom(2 * CHUNK_SIZE))
    await backups_of(core).restore_backup("web-01", "two", actor=ALICE, safety_snapshot=False)
    assert fake_disks.read(WEB, 0, CHUNK_SIZE) == shared
    assert fake_disks.read(WEB, CHUNK_SIZE, CHUNK_SIZE) == only_second

    deleted = await core.snapshots.delete_snapshot("web-01", "two", actor=ALICE)
    assert deleted.freed_bytes is not None
    assert deleted.freed_bytes > 0
    assert (await backup_store.verify()).ok


async def test_verify_names_the_damaged_points_and_a_later_backup_heals_them(
    core: Core, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    data = os.urandom(CHUNK_SIZE)
    fake_disks.write(WEB, 0, data)
    first = await backups_of(core).create_backup("web-01", "a", actor=ALICE)
    await backups_of(core).create_backup("web-01", "b", actor=ALICE)
    # Bit rot in the chunk both points need.
    [chunk] = [p for p in (backup_store.root / ".chunks").glob("*/*") if len(p.name) == 64]
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))

    result = await backups_of(core).verify("web-01", None, actor=ALICE)

    assert {s.label for s in result.damaged} == {"a", "b"}
    assert all(s.damage for s in result.damaged)
    rows = {s.label: s for s in (await core.snapshots.list_snapshots("web-01"))[0].snapshots}
    assert rows["a"].damage
    assert rows["b"].damage
    with pytest.raises(Exception, match="damaged"):
        await backups_of(core).restore_backup("web-01", "a", actor=ALICE, safety_snapshot=False)
    assert fake_disks.read(WEB, 0, CHUNK_SIZE) == data  # the failed restore wrote nothing

    # The VM still has the data: the next backup stores the piece again.
    await backups_of(core).create_backup("web-01", "c", actor=ALICE)
    again = await backups_of(core).verify("web-01", None, actor=ALICE)
    assert again.report.ok
    assert {s.label for s in again.repaired} == {"a", "b"}
    assert first.snapshot.point_id is not None
    ops = await core.snapshots._catalogue.operations(WEB)
    assert any(
        o.kind is OperationKind.VERIFY and o.status is OperationStatus.SUCCEEDED for o in ops
    )


async def test_archive_moves_a_full_snapshot_to_the_store_and_frees_the_image(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    data = os.urandom(MiB)
    fake_disks.write(WEB, 0, data)
    made = await core.snapshots.create_snapshot("web-01", "pre-upgrade", actor=ALICE)
    fake_disks.write(WEB, 0, os.urandom(MiB))

    result = await backups_of(core).archive("web-01", "pre-upgrade", actor=ALICE)

    assert result.snapshot.kind is SnapshotKind.ARCHIVED
    assert result.snapshot.label == "pre-upgrade"
    assert not result.snapshot.has_memory
    assert result.freed_bytes == MiB  # what the fake image gave back
    assert made.snapshot.libvirt_name not in services.hv.vms[WEB].snapshots
    # and it restores like an incremental: the disk as the full snapshot had it
    await backups_of(core).restore_backup(
        "web-01", "pre-upgrade", actor=ALICE, safety_snapshot=False
    )
    assert fake_disks.read(WEB, 0, MiB) == data


async def test_a_new_catalogue_over_an_old_store_lists_and_restores(
    core: Core, services: Services, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    data = os.urandom(MiB)
    fake_disks.write(WEB, 0, data)
    await backups_of(core).create_backup("web-01", "survivor", actor=ALICE)
    # The catalogue loses the record (a new snapbot, a new database).
    [row] = [s for s in await services.catalogue.snapshots(WEB) if s.label == "survivor"]
    await services.catalogue.remove_snapshot(WEB, row.libvirt_name)

    listing = await core.snapshots.list_snapshots("web-01")

    [adopted] = [s for s in listing[0].snapshots if s.label == "survivor"]
    assert adopted.kind is SnapshotKind.INCREMENTAL
    assert adopted.created_by == ALICE.user
    fake_disks.write(WEB, 0, os.urandom(MiB))
    await backups_of(core).restore_backup("web-01", "survivor", actor=ALICE, safety_snapshot=False)
    assert fake_disks.read(WEB, 0, MiB) == data


async def test_a_point_gone_from_the_store_is_reported_missing_not_restored(
    core: Core, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    made = await backups_of(core).create_backup("web-01", "lost", actor=ALICE)
    assert made.snapshot.point_id is not None
    await backup_store.delete_point(PointRef(WEB, made.snapshot.point_id))
    with pytest.raises(SnapshotMissing):
        await backups_of(core).restore_backup("web-01", "lost", actor=ALICE)
    assert ("restore_in_place", "web-01") not in fake_disks.calls


async def test_without_a_store_a_store_record_cannot_be_deleted_silently(
    services: Services, core: Core
) -> None:
    await backups_of(core).create_backup("web-01", "p", actor=ALICE)
    bare = SnapshotService(
        services.hv,
        services.catalogue,
        OperationRunner(services.catalogue, SystemClock(), "x"),
        SystemClock(),
    )
    with pytest.raises(InvalidInput, match="SNAPBOT_BACKUP_DIR"):
        await bare.delete_snapshot("web-01", "p", actor=ALICE)
    assert [s.label for s in await services.catalogue.snapshots(WEB)] == ["p"]


async def test_backup_store_directory_must_exist(tmp_path: Path) -> None:
    from core.config import Settings

    base = {"SNAPBOT_DATA_DIR": str(tmp_path)}
    with pytest.raises(InvalidInput, match="absolute path"):
        Settings.load({**base, "SNAPBOT_BACKUP_DIR": "backups"})
    with pytest.raises(InvalidInput, match="not a directory"):
        Settings.load({**base, "SNAPBOT_BACKUP_DIR": str(tmp_path / "nfs-not-mounted")})
    assert Settings.load({**base, "SNAPBOT_BACKUP_DIR": str(tmp_path)}).backup_dir == tmp_path


# --- schedules and retention ------------------------------------------------------------------


async def test_incremental_schedule_prunes_its_own_kind_and_never_the_full_snapshots(
    core: Core, fake_disks: FakeDiskAccess
) -> None:
    for label in ("manual-full-1", "manual-full-2"):
        await core.snapshots.create_snapshot("web-01", label, actor=ALICE)
    schedule = await core.schedules.add(
        "nightly-inc",
        "web-01",
        parse_when(["daily", "02:00"], "UTC"),
        RetentionPolicy.from_counts(last=2, include_manual=True),
        None,
        ALICE,
        task=ScheduleTask.INCREMENTAL,
    )
    outcomes = []
    for day in (1, 2, 3):
        fake_disks.write(WEB, 0, os.urandom(MiB))
        report = await core.runs.run(schedule, datetime(2026, 11, day, 2, tzinfo=UTC))
        assert report is not None
        outcomes += report.outcomes

    assert all(o.backup is not None and o.backup.figures.bytes_new >= MiB for o in outcomes)
    rows = await core.snapshots.list_snapshots("web-01")
    by_kind: dict[SnapshotKind, set[str]] = {}
    for s in rows[0].snapshots:
        by_kind.setdefault(s.kind, set()).add(s.label)
    # its retention (keep 2, manual included) judged incrementals only
    assert by_kind[SnapshotKind.INCREMENTAL] == {
        "nightly-inc-20261102-0200",
        "nightly-inc-20261103-0200",
    }
    assert by_kind[SnapshotKind.FULL] == {"manual-full-1", "manual-full-2"}
    assert outcomes[-1].prune is not None
    assert [d.snapshot.label for d in outcomes[-1].prune.deleted] == ["nightly-inc-20261101-0200"]


async def test_manual_prune_keeps_the_count_of_each_kind(core: Core) -> None:
    for n in (1, 2):
        await core.snapshots.create_snapshot("web-01", f"full-{n}", actor=ALICE)
        await backups_of(core).create_backup("web-01", f"inc-{n}", actor=ALICE)
    preview = await core.pruning.preview(
        "web-01", RetentionPolicy.from_counts(last=1, include_manual=True)
    )
    deleted = {s.label for s in preview.plans[0].to_delete}
    assert deleted == {"full-1", "inc-1"}


async def test_a_schedule_with_archive_moves_old_full_snapshots_to_the_store(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    schedule = await core.schedules.add(
        "hourly",
        "web-01",
        parse_when(["daily", "02:00"], "UTC"),
        RetentionPolicy.from_counts(last=1),
        None,
        ALICE,
        archive=True,
    )
    first_data = os.urandom(MiB)
    fake_disks.write(WEB, 0, first_data)
    await core.runs.run(schedule, datetime(2026, 11, 1, 2, tzinfo=UTC))
    fake_disks.write(WEB, 0, os.urandom(MiB))
    report = await core.runs.run(schedule, datetime(2026, 11, 2, 2, tzinfo=UTC))

    assert report is not None
    [outcome] = report.outcomes
    assert outcome.prune is not None
    assert [a.snapshot.label for a in outcome.prune.archived] == ["hourly-20261101-0200"]
    rows = {s.label: s for s in await services.catalogue.snapshots(WEB)}
    assert rows["hourly-20261101-0200"].kind is SnapshotKind.ARCHIVED
    assert rows["hourly-20261102-0200"].kind is SnapshotKind.FULL
    await backups_of(core).restore_backup(
        "web-01", "hourly-20261101-0200", actor=ALICE, safety_snapshot=False
    )
    assert fake_disks.read(WEB, 0, MiB) == first_data


async def test_a_verification_schedule_reports_damage_per_vm(
    core: Core, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    fake_disks.write(WEB, 0, os.urandom(MiB))
    await backups_of(core).create_backup("web-01", "nightly", actor=ALICE)
    schedule = await core.schedules.add(
        "check",
        "web-*",
        parse_when(["daily", "05:00"], "UTC"),
        None,
        None,
        ALICE,
        task=ScheduleTask.VERIFY,
    )
    [chunk] = [p for p in (backup_store.root / ".chunks").glob("*/*") if len(p.name) == 64]
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))

    report = await core.runs.run(schedule, datetime(2026, 11, 1, 5, tzinfo=UTC))

    assert report is not None
    web = next(o for o in report.outcomes if o.vm == "web-01")
    assert web.verify is not None
    assert [s.label for s in web.verify.damaged] == ["nightly"]
    assert report.summary()["vms"]["web-01"]["damaged"] == ["nightly"]  # type: ignore[index]
    # a VM without restore points has nothing to verify: not a failure
    web2 = next(o for o in report.outcomes if o.vm == "web-02")
    assert web2.ok
    assert web2.verify is not None
    assert web2.verify.report.points_checked == ()


async def test_schedule_options_that_cannot_work_together_are_refused(core: Core) -> None:
    when = parse_when(["daily", "02:00"], "UTC")
    with pytest.raises(InvalidInput, match="--archive"):
        await core.schedules.add(
            "x",
            "all",
            when,
            RetentionPolicy.from_counts(last=1),
            None,
            ALICE,
            task=ScheduleTask.INCREMENTAL,
            archive=True,
        )
    with pytest.raises(InvalidInput, match="deletes nothing"):
        await core.schedules.add(
            "y",
            "all",
            when,
            RetentionPolicy.from_counts(last=1),
            None,
            ALICE,
            task=ScheduleTask.VERIFY,
        )


# --- operations a dead process left ------------------------------------------------------------


async def dead_operation(
    services: Services, kind: OperationKind, vm_name: str, label: str, details: dict[str, object]
) -> str:
    import socket

    vm = await services.hv.get_vm(vm_name)
    op = services.runner.new_operation(kind, ALICE, vm_uuid=vm.uuid, vm_name=vm.name, label=label)
    await services.catalogue.begin_operation(op, f"{socket.gethostname()}:999999:dead")
    await services.catalogue.update_details(op.id, details)
    return op.id


def reconciler_of(
    services: Services, store: DirectoryBackupStore, disks: FakeDiskAccess
) -> Reconciler:
    return Reconciler(
        services.hv, services.catalogue, SystemClock(), services.owner, store=store, disks=disks
    )


async def test_a_dead_backup_is_reconciled_from_the_store_and_its_job_ended(
    services: Services, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    # The process wrote the point (manifest and all) and died before recording it.
    await dead_operation(services, OperationKind.BACKUP, "web-01", "finished", {})
    vm = await services.hv.get_vm("web-01")
    async with fake_disks.backup_view(vm) as export:
        point = await backup_store.write_point(
            BackupSource(
                WEB,
                "web-01",
                BackupKind.INCREMENTAL,
                export.domain_xml,
                export.disks,
                label="finished",
                created_by=ALICE.user,
            )
        )
    fake_disks.leftover_jobs.add(WEB)

    [ended] = await reconciler_of(services, backup_store, fake_disks).recover_interrupted()

    assert ended.status is OperationStatus.RECONCILED
    assert "backup job it had left on the VM was ended" in (ended.outcome or "")
    assert f"restore point {point.ref.point_id} was completed" in (ended.outcome or "")
    assert not fake_disks.leftover_jobs
    labels = {s.label for s in await services.catalogue.snapshots(WEB)}
    assert "finished" in labels


async def test_a_dead_backup_without_a_point_lists_nothing(
    services: Services, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    await dead_operation(services, OperationKind.BACKUP, "web-01", "half", {})
    [ended] = await reconciler_of(services, backup_store, fake_disks).recover_interrupted()
    assert "no restore point was completed" in (ended.outcome or "")
    assert await services.catalogue.snapshots(WEB) == []


async def test_a_restore_from_the_store_that_died_writing_leaves_the_vm_off_and_says_why(
    core: Core, services: Services, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    made = await backups_of(core).create_backup("web-01", "p", actor=ALICE)
    await services.hv.stop(await services.hv.get_vm("web-01"))
    await dead_operation(
        services,
        OperationKind.RESTORE,
        "web-01",
        "p",
        {
            "libvirt_name": made.snapshot.libvirt_name,
            "point_id": made.snapshot.point_id,
            "pre_state": "running",
            "safety": "sb-safety",
            "writing_disks": True,
        },
    )
    [ended] = await reconciler_of(services, backup_store, fake_disks).recover_interrupted()
    assert "partly restored" in (ended.outcome or "")
    assert "sb-safety" in (ended.outcome or "")
    # never started on half-written disks
    assert (await services.hv.get_vm("web-01")).state is VmState.SHUT_OFF


async def test_a_dead_archive_keeps_exactly_one_copy(
    core: Core, services: Services, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    made = await core.snapshots.create_snapshot("web-01", "pre", actor=ALICE)
    # The copy was written; libvirt's snapshot was never deleted.
    vm = await services.hv.get_vm("web-01")
    async with fake_disks.snapshot_view(vm, made.snapshot.libvirt_name) as export:
        point = await backup_store.write_point(
            BackupSource(
                WEB, "web-01", BackupKind.ARCHIVED, export.domain_xml, export.disks, label="pre"
            )
        )
    await dead_operation(
        services,
        OperationKind.ARCHIVE,
        "web-01",
        "pre",
        {"libvirt_name": made.snapshot.libvirt_name, "point_id": point.ref.point_id},
    )
    [ended] = await reconciler_of(services, backup_store, fake_disks).recover_interrupted()
    assert "unfinished copy" in (ended.outcome or "")
    assert await backup_store.list_points(WEB) == []
    [row] = await services.catalogue.snapshots(WEB)
    assert row.kind is SnapshotKind.FULL


async def test_restore_points_of_a_deleted_vm_stay_present_through_a_full_sync(
    core: Core, services: Services, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess
) -> None:
    await backups_of(core).create_backup("db-01", "keep-me", actor=ALICE)
    await core.snapshots.create_snapshot("db-01", "internal", actor=ALICE)
    del services.hv.vms[DB]
    await reconciler_of(services, backup_store, fake_disks).sync_all()
    rows = {s.label: s.status for s in await services.catalogue.snapshots(DB)}
    assert rows == {"keep-me": CatalogueStatus.PRESENT, "internal": CatalogueStatus.MISSING}


async def test_a_deleted_vm_known_only_to_the_store_is_listed_and_comes_back(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    data = os.urandom(MiB)
    fake_disks.write(DB, 0, data)
    await backups_of(core).create_backup("db-01", "only-copy", actor=ALICE)
    # A new catalogue (its records are gone) and the VM deleted with its disk.
    for row in await services.catalogue.snapshots(DB):
        await services.catalogue.remove_snapshot(DB, row.libvirt_name)
    del services.hv.vms[DB]
    fake_disks.disk(DB).unlink()

    groups = {g.vm_name: g for g in await core.snapshots.list_snapshots()}
    assert groups["db-01"].vm is None
    assert [s.label for s in groups["db-01"].snapshots] == ["only-copy"]

    await backups_of(core).restore_as("db-01", "only-copy", None, actor=ALICE)
    assert (await services.hv.get_vm("db-01")).uuid == DB
    assert fake_disks.read(DB, 0, MiB) == data


async def test_verify_of_an_unknown_vm_suggests_the_vms_there_are(core: Core) -> None:
    with pytest.raises(VmNotFound) as missing:
        await backups_of(core).verify("web-1", None, actor=ALICE)
    assert "web-01" in missing.value.suggestions


async def test_a_listing_reads_no_manifest_of_points_it_already_knows(
    core: Core, backup_store: DirectoryBackupStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        await backups_of(core).create_backup("web-01", f"p{n}", actor=ALICE)
    read: list[PointRef] = []
    files = backup_store._files  # the store's file reader: every manifest read goes through it
    original = files.manifest

    def counting(ref: PointRef) -> Manifest:
        read.append(ref)
        return original(ref)

    monkeypatch.setattr(files, "manifest", counting)
    await core.snapshots.list_snapshots("web-01")
    assert read == []  # the three points are known: only their ids were listed
