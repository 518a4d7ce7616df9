"""The offsite copy against a real S3-compatible server (moto's, over HTTP on a free port):
copy, an interrupted copy resumed, verification of the copy on its own, delayed deletion, and
a snapbot with only the bucket that lists and restores a deleted VM."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.backupstore.chunks import HEADER_SIZE
from core.adapters.offsite import Bucket, S3OffsiteStore
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock
from core.config import OffsiteSettings, Settings
from core.domain.backups import PointRef
from core.domain.offsite import OffsiteUnavailable
from core.domain.vm import VmState
from core.errors import InvalidInput
from core.services.offsite import OffsiteService
from tests.conftest import ALICE, Services
from tests.fakes.catalogue import MemoryCatalogue
from tests.fakes.disks import FakeDiskAccess
from tests.fakes.s3 import new_bucket, object_keys, put_object, s3_endpoint

__all__ = ["s3_endpoint"]  # the session fixture, used by name

WEB = "11111111-1111-1111-1111-111111111111"
DB = "33333333-3333-3333-3333-333333333333"
MiB = 1024 * 1024
DAY = timedelta(days=1)


class ManualClock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


class CountingBucket(Bucket):
    """Counts every PUT by key; can fail the Nth PUT of a chunk, as a dropped connection or a
    killed process would stop a copy there."""

    def __init__(self, endpoint: str, bucket: str, *, fail_at_chunk: int | None = None) -> None:
        super().__init__(endpoint, bucket)
        self.puts: Counter[str] = Counter()
        self.fail_at_chunk = fail_at_chunk
        self._chunk_puts = 0
        self._lock = threading.Lock()  # a copy uploads a few chunks at a time

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._chunk_puts += key.startswith("chunks/")
            failing = key.startswith("chunks/") and self._chunk_puts == self.fail_at_chunk
        if failing:
            raise OffsiteUnavailable(self.where, "connection reset (test)")
        super().put(key, data)
        with self._lock:
            self.puts[key] += 1


def offsite_of(endpoint: str, root: Path | None, *, bucket: str | None = None) -> S3OffsiteStore:
    return S3OffsiteStore(
        Bucket(endpoint, bucket or new_bucket(endpoint)), root, delete_after=14 * DAY
    )


def backups(core: Core):  # type: ignore[no-untyped-def]
    assert core.backups is not None
    return core.backups


async def test_copy_uploads_every_point_and_piece_once_and_then_nothing(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    fake_disks.write(WEB, 0, os.urandom(2 * MiB) * 2)  # two equal halves of a chunk pair
    fake_disks.write(DB, 0, os.urandom(5 * MiB))
    await backups(core).create_backup("web-01", "first", actor=ALICE)
    await backups(core).create_backup("db-01", "first", actor=ALICE)
    store = offsite_of(s3_endpoint, backup_store.root)
    service = OffsiteService(store, SystemClock())

    before = await service.view()
    assert before.status.local_points == 2
    assert len(before.status.pending) == 2

    report = await service.copy_new()
    assert len(report.points_copied) == 2
    chunk_files = {c.digest for c in backup_store._files.chunks.chunks()}
    assert report.chunks_uploaded == len(chunk_files)
    objects = object_keys(s3_endpoint, store.bucket.name)
    assert {k.removeprefix("chunks/") for k in objects if k.startswith("chunks/")} == chunk_files
    for digest in chunk_files:  # stored as the store holds them, byte for byte
        assert objects[f"chunks/{digest}"] == backup_store._files.chunks.path(digest).read_bytes()

    again = await service.copy_new()
    assert again.points_copied == ()
    assert again.chunks_uploaded == 0
    assert again.points_present == 2
    after = await service.view()
    assert after.status.pending == ()
    assert after.status.offsite_points == 2
    assert after.last_copy == again
    store.close()


async def test_an_interrupted_copy_resumes_without_duplicates_or_gaps(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    fake_disks.write(WEB, 0, os.urandom(12 * MiB))  # three chunks
    await backups(core).create_backup("web-01", "one", actor=ALICE)
    fake_disks.write(DB, 0, os.urandom(12 * MiB))
    await backups(core).create_backup("db-01", "two", actor=ALICE)
    name = new_bucket(s3_endpoint)

    failing = CountingBucket(s3_endpoint, name, fail_at_chunk=5)  # inside the second point
    store = S3OffsiteStore(failing, backup_store.root, delete_after=14 * DAY)
    with pytest.raises(OffsiteUnavailable, match="connection reset"):
        await store.copy_new()
    interrupted = object_keys(s3_endpoint, name)
    manifests = [k for k in interrupted if k.endswith("manifest.json")]
    assert len(manifests) == 1  # the first point is whole; the second has no manifest yet
    # A copy reading the bucket now sees one point, and everything it needs is there.
    reader = offsite_of(s3_endpoint, None, bucket=name)
    assert len(await reader.list_points()) == 1
    assert (await reader.verify()).ok

    resuming = CountingBucket(s3_endpoint, name)
    store2 = S3OffsiteStore(resuming, backup_store.root, delete_after=14 * DAY)
    report = await store2.copy_new()
    assert report.points_present == 1
    assert len(report.points_copied) == 1
    # No object was uploaded twice across both runs.
    both = failing.puts + resuming.puts
    assert max(both.values()) == 1
    assert not set(failing.puts) & set(resuming.puts)
    # No gap: the result is exactly what one uninterrupted copy gives.
    whole = CountingBucket(s3_endpoint, new_bucket(s3_endpoint))
    await S3OffsiteStore(whole, backup_store.root, delete_after=14 * DAY).copy_new()
    assert set(object_keys(s3_endpoint, name)) == set(whole.puts) == set(both)
    verified = await reader.verify()
    assert verified.ok
    assert len(verified.points_checked) == 2
    for s in (store, store2, reader):
        s.close()


async def test_verify_finds_a_damaged_and_a_missing_piece_and_the_next_copy_repairs(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    fake_disks.write(WEB, 0, os.urandom(8 * MiB))
    result = await backups(core).create_backup("web-01", "p", actor=ALICE)
    store = offsite_of(s3_endpoint, backup_store.root)
    service = OffsiteService(store, SystemClock())
    await service.copy_new()
    assert (await service.verify()).ok
    objects = object_keys(s3_endpoint, store.bucket.name)
    damaged, missing = sorted(k for k in objects if k.startswith("chunks/"))
    raw = bytearray(objects[damaged])
    raw[HEADER_SIZE + 10] ^= 0xFF  # one flipped bit's worth of rot in the payload
    put_object(s3_endpoint, store.bucket.name, damaged, bytes(raw))
    store.bucket.delete(missing)

    report = await service.verify()

    ref = PointRef(WEB, result.snapshot.point_id or "")
    assert report.damaged_chunks == (damaged.removeprefix("chunks/"),)
    assert report.missing_chunks == (missing.removeprefix("chunks/"),)
    assert report.damaged_points == (ref,)
    # The damaged piece is set aside, so the copy uploads both again from the local store...
    after = object_keys(s3_endpoint, store.bucket.name)
    assert damaged not in after
    assert f"damaged/{damaged.removeprefix('chunks/')}" in after
    repaired = await store.copy_new()
    assert repaired.points_present == 1
    assert repaired.chunks_uploaded == 2
    again = await service.verify()
    assert again.ok
    assert again.chunks_checked == 2
    store.close()


async def test_a_deleted_point_stays_offsite_until_the_delay_has_passed(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    shared = os.urandom(CHUNK)
    fake_disks.write(WEB, 0, shared + os.urandom(CHUNK))
    keep = await backups(core).create_backup("web-01", "keep", actor=ALICE)
    fake_disks.write(WEB, CHUNK, os.urandom(CHUNK))  # the second chunk changes
    gone = await backups(core).create_backup("web-01", "gone", actor=ALICE)
    clock = ManualClock()
    store = offsite_of(s3_endpoint, backup_store.root)
    service = OffsiteService(store, clock)
    await service.copy_new()
    gone_ref = PointRef(WEB, gone.snapshot.point_id or "")
    keep_ref = PointRef(WEB, keep.snapshot.point_id or "")
    await backup_store.delete_point(gone_ref)  # a mistaken prune
    marked_at = clock.at

    first = await service.apply_deletions()
    assert first.newly_marked == (gone_ref,)
    assert first.deleted == ()
    view = await service.view()
    assert [m.ref for m in view.status.marked] == [gone_ref]
    assert view.status.marked[0].label == "gone"
    assert view.status.marked[0].delete_at == marked_at + 14 * DAY
    # Until then it is still listed and restorable from the copy.
    reader = offsite_of(s3_endpoint, None, bucket=store.bucket.name)
    assert gone_ref in {m.ref for m in await reader.list_points()}

    clock.at = marked_at + 14 * DAY - timedelta(minutes=1)
    assert (await service.apply_deletions()).deleted == ()
    assert gone_ref in {m.ref for m in await reader.list_points()}

    clock.at = marked_at + 14 * DAY
    done = await service.apply_deletions()
    assert done.deleted == (gone_ref,)
    assert done.chunks_deleted == 1  # its own chunk; the shared one stays for "keep"
    listed = {m.ref for m in await reader.list_points()}
    assert listed == {keep_ref}
    assert not [k for k in object_keys(s3_endpoint, store.bucket.name) if gone_ref.point_id in k]
    assert (await reader.verify()).ok
    store.close()
    reader.close()


async def test_a_point_back_in_the_store_is_unmarked_and_an_empty_store_marks_nothing(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    fake_disks.write(WEB, 0, os.urandom(MiB))
    point = await backups(core).create_backup("web-01", "only", actor=ALICE)
    clock = ManualClock()
    store = offsite_of(s3_endpoint, backup_store.root)
    service = OffsiteService(store, clock)
    await service.copy_new()
    ref = PointRef(WEB, point.snapshot.point_id or "")
    await backup_store.delete_point(ref)

    # The store now holds nothing: that looks like a lost store, not a prune.
    report = await service.apply_deletions()
    assert report.newly_marked == ()
    assert report.held_back is not None
    clock.at += 30 * DAY
    assert (await service.apply_deletions()).deleted == ()
    assert len(await offsite_of(s3_endpoint, None, bucket=store.bucket.name).list_points()) == 1
    store.close()


async def test_a_snapbot_with_only_the_bucket_restores_a_deleted_vm(
    core: Core,
    services: Services,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * MiB)
    fake_disks.write(DB, 2 * MiB, data)
    await backups(core).create_backup("db-01", "last-good", actor=ALICE)
    store = offsite_of(s3_endpoint, backup_store.root)
    await OffsiteService(store, SystemClock()).copy_new()
    # The VM is deleted, its disk too, and the whole local store is lost.
    del services.hv.vms[DB]
    fake_disks.disk(DB).unlink()
    backup_store.close()
    shutil.rmtree(backup_store.root)

    # The same host, a new snapbot: its own empty catalogue, and only the bucket.
    hv, disks = services.hv, fake_disks
    reader = offsite_of(s3_endpoint, None, bucket=store.bucket.name)
    settings = Settings(
        libvirt_uri="fake:///",
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url="sqlite://:memory:",
        offsite=OffsiteSettings(s3_endpoint, store.bucket.name),
    )
    clock = SystemClock()
    fresh = wire(
        settings,
        hv,
        MemoryCatalogue(clock),  # type: ignore[arg-type]
        clock,
        libvirt_uri="fake:///",
        store=reader,
        disks=disks,
        offsite=reader,
    )
    assert fresh.offsite is not None
    # The full listing shows the deleted VM's points, read from the bucket alone.
    listing = {entry.vm_name: entry for entry in await fresh.snapshots.list_snapshots()}
    assert [s.label for s in listing["db-01"].snapshots] == ["last-good"]

    result = await backups(fresh).restore_as("db-01", "last-good", None, actor=ALICE)

    back = await hv.get_vm("db-01")
    assert back.uuid == DB
    assert disks.read(DB, 2 * MiB, 3 * MiB) == data
    assert result.vm_state is VmState.SHUT_OFF
    with pytest.raises(InvalidInput, match="read-only"):
        await backups(fresh).create_backup("db-01", "new", actor=ALICE)
    store.close()
    reader.close()


async def test_a_backup_is_copied_offsite_after_its_reply(
    services: Services,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    store = offsite_of(s3_endpoint, backup_store.root)
    settings = Settings(
        libvirt_uri="fake:///",
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url="sqlite://:memory:",
    )
    core = wire(
        settings,
        services.hv,
        services.catalogue,
        SystemClock(),
        libvirt_uri="fake:///",
        store=backup_store,
        disks=fake_disks,
        offsite=store,
    )
    assert core.offsite is not None
    fake_disks.write(WEB, 0, os.urandom(MiB))
    await backups(core).create_backup("web-01", "auto", actor=ALICE)
    for _ in range(100):
        view = await core.offsite.view()
        if view.status.offsite_points == 1 and not view.copying:
            break
        await asyncio.sleep(0.05)
    assert view.status.offsite_points == 1
    assert view.status.pending == ()
    assert view.last_copy is not None
    assert len(view.last_copy.points_copied) == 1
    await core.offsite.close()
    store.close()


async def test_an_unreachable_endpoint_is_a_clear_error_without_credentials(
    backup_store: DirectoryBackupStore, s3_endpoint: str
) -> None:
    store = offsite_of(s3_endpoint, backup_store.root, bucket="no-such-bucket")
    with pytest.raises(OffsiteUnavailable, match="no-such-bucket") as caught:
        await store.copy_new()
    assert "snapbot-test-secret" not in str(caught.value)
    store.close()


def test_settings_read_the_offsite_copy() -> None:
    env = {
        "SNAPBOT_OFFSITE_URL": "https://s3.example.com",
        "SNAPBOT_OFFSITE_BUCKET": "vm-backups",
        "SNAPBOT_OFFSITE_DELETE_AFTER_DAYS": "30",
        "HOME": "/tmp",
    }
    settings = Settings.load(env)
    assert settings.offsite == OffsiteSettings(
        "https://s3.example.com", "vm-backups", "us-east-1", 30
    )
    assert Settings.load({"HOME": "/tmp"}).offsite is None
    assert Settings.load({**env, "SNAPBOT_OFFSITE_DELETE_AFTER_DAYS": ""}).offsite is not None
    with pytest.raises(InvalidInput, match="SNAPBOT_OFFSITE_BUCKET"):
        Settings.load({"SNAPBOT_OFFSITE_URL": "https://s3.example.com", "HOME": "/tmp"})
    with pytest.raises(InvalidInput, match="without credentials"):
        Settings.load({**env, "SNAPBOT_OFFSITE_URL": "https://key:secret@s3.example.com"})
    with pytest.raises(InvalidInput, match="whole number"):
        Settings.load({**env, "SNAPBOT_OFFSITE_DELETE_AFTER_DAYS": "two weeks"})


CHUNK = 4 * MiB


async def test_doctor_checks_the_bucket_answers_and_takes_writes(
    s3_endpoint: str, tmp_path: Path
) -> None:
    from bot.messages.doctor import finding_line
    from core.adapters.offsite.probe import BucketProbe
    from core.services.doctor import Check, Doctor, DoctorPorts, Status
    from tests.fakes.hypervisor import FakeHypervisor
    from tests.unit.test_doctor import Ports

    ports = Ports()
    name = new_bucket(s3_endpoint)

    async def check(bucket: str) -> str:
        settings = Settings(
            libvirt_uri="qemu:///system",
            libvirt_uri_explicit=True,
            data_dir=tmp_path,
            database_url=f"sqlite://{tmp_path / 'db.sqlite3'}",
            offsite=OffsiteSettings(s3_endpoint, bucket),
        )
        found = await Doctor(
            settings,
            FakeHypervisor(),
            DoctorPorts(ports, ports, ports, SystemClock(), ports, BucketProbe()),  # type: ignore[arg-type]
            required_scopes=frozenset(),
            public_url=None,
        ).run()
        (finding,) = [f for f in found if f.check is Check.OFFSITE]
        assert (finding.status is Status.OK) == (bucket == name)
        return finding_line(finding)

    assert "answers and takes writes" in await check(name)
    assert object_keys(s3_endpoint, name) == {}  # its probe object was removed
    line = await check("no-such-bucket")
    assert "NoSuchBucket" in line or "Not Found" in line or "404" in line, line
    assert "AWS_ACCESS_KEY_ID" in line


async def test_build_core_wires_the_copy_and_reads_the_bucket_without_a_store(
    core: Core,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    from core.bootstrap import build_core

    fake_disks.write(WEB, 0, os.urandom(MiB))
    await backups(core).create_backup("web-01", "kept", actor=ALICE)
    name = new_bucket(s3_endpoint)
    store = offsite_of(s3_endpoint, backup_store.root, bucket=name)
    await store.copy_new()
    store.close()
    # A snapbot started with only the bucket (libvirt's test driver as its hypervisor).
    settings = Settings(
        libvirt_uri="test:///default",
        libvirt_uri_explicit=True,
        data_dir=tmp_path / "fresh",
        database_url="sqlite://:memory:",
        offsite=OffsiteSettings(s3_endpoint, name),
    )
    async with build_core(settings, allow_demo=False) as fresh:
        assert fresh.offsite is not None
        assert fresh.backups is not None
        groups = {g.vm_name: g for g in await fresh.snapshots.list_snapshots()}
        assert [s.label for s in groups["web-01"].snapshots] == ["kept"]
        view = await fresh.offsite.view()
        assert view.status.offsite_points == 1
        with pytest.raises(InvalidInput, match="no local backup store"):
            await fresh.offsite.copy_new()
