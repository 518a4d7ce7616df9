"""The deduplicated backup store on real files: what a second backup stores, exact read-back,
deletes that never break another point, garbage collection beside running writers, damage
found by verify and healed by the next write, writes killed mid-way, and a fresh process
reading a store it did not write."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.backupstore.chunks import ChunkStore
from core.adapters.backupstore.image_files import FileDiskReader
from core.adapters.backupstore.maintenance import collect_garbage, verify
from core.adapters.backupstore.points import PointFiles
from core.adapters.backupstore.writers import WRITERS_DIR, registered_writer
from core.domain.backups import (
    CHUNK_SIZE,
    BackupDamaged,
    BackupKind,
    BackupSource,
    Manifest,
    PointRef,
    RestorePointNotFound,
)
from tests.reliability.figures import record

MiB = 1024 * 1024
VM_UUID = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
DOMAIN_XML = "<domain type='kvm'><name>web-01</name></domain>"
NVRAM = os.urandom(128 * 1024)

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-img and qemu-io (qemu-utils)",
)


# --- images ---------------------------------------------------------------------------------


def make_image(path: Path, size: int) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), str(size)], check=True)
    return path


def qemu_write(image: Path, offset: int, length: int, pattern: int) -> None:
    """A guest-like write of a byte pattern (compresses to almost nothing)."""
    subprocess.run(
        ["qemu-io", "-f", "raw", "-c", f"write -P {pattern:#x} {offset} {length}", str(image)],
        check=True,
        capture_output=True,
    )


def random_write(image: Path, offset: int, length: int) -> None:
    """Incompressible data, so stored bytes measure deduplication, not zstd."""
    with image.open("r+b") as out:
        out.seek(offset)
        out.write(os.urandom(length))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def first_chunk_digest(image: Path) -> str:
    with image.open("rb") as source:
        return hashlib.sha256(source.read(CHUNK_SIZE)).hexdigest()


def source_for(image: Path, name: str = "web-01") -> BackupSource:
    return BackupSource(
        vm_uuid=VM_UUID,
        vm_name=name,
        kind=BackupKind.INCREMENTAL,
        domain_xml=DOMAIN_XML,
        disks={"vda": FileDiskReader(image)},
        blobs={"nvram": NVRAM},
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """64 MiB disk: 16 MiB of incompressible data at 0, a pattern at 40 MiB, the rest holes."""
    path = make_image(tmp_path / "vda.raw", 64 * MiB)
    random_write(path, 0, 16 * MiB)
    qemu_write(path, 40 * MiB, 2 * MiB, 0x5A)
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DirectoryBackupStore]:
    # No safety margin: these tests control every chunk's age themselves.
    backups = DirectoryBackupStore(tmp_path / "backups", gc_safety_margin=timedelta(0))
    yield backups
    backups.close()


async def assert_reads_back(
    store: DirectoryBackupStore, ref: PointRef, expected_sha256: str, tmp_path: Path
) -> Path:
    restored = tmp_path / f"restored-{ref.point_id}.raw"
    await store.read_disk(ref, "vda", restored)
    assert sha256(restored) == expected_sha256, f"{ref.point_id} reads back different bytes"
    return restored


def chunk_files(root: Path) -> set[str]:
    return {p.name for p in (root / ".chunks").glob("*/*") if len(p.name) == 64}


def age_every_chunk(root: Path, seconds: float = 3600) -> None:
    """Makes every chunk look written ``seconds`` ago (as if by an earlier backup)."""
    then = time.time() - seconds
    for path in (root / ".chunks").glob("*/*"):
        os.utime(path, (then, then))


# --- writing and reading ---------------------------------------------------------------------


async def test_second_point_stores_what_changed_not_the_image(
    store: DirectoryBackupStore, image: Path, tmp_path: Path
) -> None:
    first_hash = sha256(image)
    first = await store.write_point(source_for(image))
    # 16 MiB of data + the 2 MiB pattern's chunk; holes are neither read nor stored.
    assert first.figures.bytes_new == 20 * MiB
    assert first.figures.bytes_stored < 17 * MiB  # the pattern compresses to almost nothing

    # The guest changes 8 MiB (two aligned chunks) and 4 KiB inside a third chunk.
    random_write(image, 4 * MiB, 8 * MiB)
    random_write(image, 13 * MiB + 100, 4096)
    changed = 8 * MiB + 4096
    second_hash = sha256(image)
    second = await store.write_point(source_for(image))

    assert second.figures.bytes_new == 3 * CHUNK_SIZE  # the chunks touched, nothing else
    assert second.figures.bytes_stored <= 3 * CHUNK_SIZE + 3 * 64
    assert second.figures.bytes_stored < changed + 2 * CHUNK_SIZE
    assert second.figures.bytes_read == first.figures.bytes_read  # a full read, not a full store
    assert second.logical_size == 64 * MiB
    record(
        "Backup store: incremental size",
        "64 MiB disk backed up twice, 8 MiB + 4 KiB changed in between",
        f"{changed / MiB:.2f} MiB changed: second point stored "
        f"{second.figures.bytes_stored / MiB:.1f} MiB (first {first.figures.bytes_stored / MiB:.1f} "
        f"MiB, read {second.figures.bytes_read / MiB:.0f} MiB)",
    )

    # Each point is logically full: both read back exactly as the disk was.
    await assert_reads_back(store, first.ref, first_hash, tmp_path)
    restored = await assert_reads_back(store, second.ref, second_hash, tmp_path)
    # Zero chunks come back as holes, not written zeros.
    assert restored.stat().st_blocks * 512 < 30 * MiB
    assert await store.read_blob(second.ref, "nvram") == NVRAM
    assert (await store.manifest(second.ref)).domain_xml == DOMAIN_XML


def test_a_qcow2_image_is_stored_as_given_and_deduplicated(tmp_path: Path) -> None:
    """The store reads whatever file it is given: a qcow2 image comes back as the same qcow2
    image, and a second backup of it stores the written clusters and qcow2's changed metadata,
    not the image."""
    image = tmp_path / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "256M"], check=True)

    def guest_write(offset: int, length: int, pattern: int) -> None:
        subprocess.run(
            [
                "qemu-io",
                "-f",
                "qcow2",
                "-c",
                f"write -P {pattern:#x} {offset} {length}",
                str(image),
            ],
            check=True,
            capture_output=True,
        )

    for mib in range(24):  # a pattern per MiB, so no two chunks of the file are alike
        guest_write(mib * MiB, MiB, mib + 1)
    files = PointFiles(tmp_path / "backups")
    first, first_hash = files.write_point(source_for(image)), sha256(image)
    guest_write(100 * MiB, 4 * MiB, 0x42)
    second, second_hash = files.write_point(source_for(image)), sha256(image)

    # 4 MiB of guest data land in at most two chunks of the file; the header, L1/L2 tables and
    # refcounts that changed sit in at most two more.
    assert second.figures.bytes_new <= 4 * CHUNK_SIZE
    assert first.figures.bytes_new >= 24 * MiB
    for point, expected in ((first, first_hash), (second, second_hash)):
        restored = tmp_path / f"{point.ref.point_id}.qcow2"
        files.read_disk(point.ref, "vda", restored)
        assert sha256(restored) == expected
    check = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -P 0x42 {100 * MiB} {4 * MiB}", str(restored)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Pattern verification failed" not in check.stdout + check.stderr


async def test_file_work_runs_in_the_store_threads_never_on_the_loop(
    store: DirectoryBackupStore, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    original_read = ChunkStore.read

    def watched_read(self: ChunkStore, digest: str) -> bytes:
        threads.add(threading.current_thread().name)
        return original_read(self, digest)

    monkeypatch.setattr(ChunkStore, "read", watched_read)
    point = await store.write_point(source_for(image))
    await store.read_disk(point.ref, "vda", tmp_path / "out.raw")
    await store.verify()
    assert threads
    assert all(name.startswith("backupstore") for name in threads), threads


async def test_unchanged_disk_adds_nothing(store: DirectoryBackupStore, image: Path) -> None:
    await store.write_point(source_for(image))
    again = await store.write_point(source_for(image))
    assert (again.figures.bytes_new, again.figures.bytes_stored) == (0, 0)


async def test_deleting_any_point_never_breaks_another(
    store: DirectoryBackupStore, image: Path, tmp_path: Path
) -> None:
    hashes: dict[PointRef, str] = {}
    for step in range(4):
        random_write(image, step * 4 * MiB, 4 * MiB)
        manifest = await store.write_point(source_for(image))
        hashes[manifest.ref] = sha256(image)
    refs = list(hashes)
    # Middle, then first, then last: each time with a collection, every survivor intact.
    for doomed in (refs[1], refs[0], refs[3]):
        await store.delete_point(doomed)
        del hashes[doomed]
        await store.collect_garbage()
        assert {m.ref for m in await store.list_points()} == set(hashes)
        for ref, expected in hashes.items():
            await assert_reads_back(store, ref, expected, tmp_path)
        assert (await store.verify()).ok
    with pytest.raises(RestorePointNotFound):
        await store.delete_point(refs[0])


async def test_gc_frees_exactly_the_chunks_no_point_needs(
    store: DirectoryBackupStore, image: Path, tmp_path: Path
) -> None:
    root = store.root
    keep = await store.write_point(source_for(image))
    kept_chunks = chunk_files(root)
    random_write(image, 0, 8 * MiB)  # two chunks only the second point has
    doomed = await store.write_point(source_for(image))
    only_doomed = chunk_files(root) - kept_chunks
    assert len(only_doomed) == 2
    doomed_bytes = sum((root / ".chunks" / d[:4] / d).stat().st_size for d in only_doomed)

    await store.delete_point(doomed.ref)
    age_every_chunk(root, 1)  # older than the collection, as any chunk not written beside it
    stray = root / "points" / VM_UUID / "notes-by-an-admin"
    stray.mkdir()
    os.utime(stray, (0, 0))
    report = await store.collect_garbage()
    assert stray.is_dir()  # what snapbot did not write, it does not remove

    assert report.chunks_removed == 2
    assert report.bytes_freed == doomed_bytes
    assert chunk_files(root) == kept_chunks
    assert (await store.verify(keep.ref)).ok
    assert (await store.collect_garbage()).chunks_removed == 0


def test_gc_spares_chunks_a_running_backup_reuses(tmp_path: Path, image: Path) -> None:
    """A backup runs while the point it deduplicates against is deleted and GC sweeps: the
    chunks it reused survive and its point is complete."""
    files = PointFiles(tmp_path / "backups")
    old = files.write_point(source_for(image))
    age_every_chunk(files.root)  # written long ago, as on a real store

    reached, release = threading.Event(), threading.Event()
    inserted = 0
    original_insert = ChunkStore.insert

    def slow_insert(self: ChunkStore, digest: str, data: bytes) -> int:
        nonlocal inserted
        inserted += 1
        if inserted == 3:  # half-way through the disk's data
            reached.set()
            assert release.wait(30)
        return original_insert(self, digest, data)

    result: list[Manifest] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ChunkStore, "insert", slow_insert)
        writer = threading.Thread(
            target=lambda: result.append(files.write_point(source_for(image)))
        )
        writer.start()
        assert reached.wait(30)
        files.delete_point(old.ref)
        report = collect_garbage(files, timedelta(0))
        release.set()
        writer.join(30)
    assert result, "the backup beside the GC failed"
    # The two chunks it had reused were kept; the three it had not reached yet were old and
    # unreferenced: swept, and stored again by the writer when it got to them.
    assert report.chunks_kept_for_writers == 2
    assert report.chunks_removed == 3
    assert verify(files, result[0].ref).ok
    restored = tmp_path / "after.raw"
    files.read_disk(result[0].ref, "vda", restored)
    assert sha256(restored) == sha256(image)


def test_a_restore_keeps_its_chunks_when_its_point_is_deleted_and_collected(
    tmp_path: Path, image: Path
) -> None:
    files = PointFiles(tmp_path / "backups")
    point = files.write_point(source_for(image))
    expected = sha256(image)
    age_every_chunk(files.root)
    original_read = ChunkStore.read
    collected: list[int] = []

    def read_then_collect(self: ChunkStore, digest: str) -> bytes:
        if not collected:  # the restore has begun: someone deletes the point and collects
            files.delete_point(point.ref)
            collected.append(collect_garbage(files, timedelta(0)).chunks_removed)
        return original_read(self, digest)

    restored = tmp_path / "restored.raw"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ChunkStore, "read", read_then_collect)
        files.read_disk(point.ref, "vda", restored)
    assert collected == [0]
    assert sha256(restored) == expected


def test_no_chunk_is_touched_while_the_sweep_judges_it(tmp_path: Path, image: Path) -> None:
    files = PointFiles(tmp_path / "backups")
    files.write_point(source_for(image))
    digest = first_chunk_digest(image)
    touched = threading.Event()
    with files.chunks.sweeping():
        toucher = threading.Thread(
            target=lambda: touched.set() if files.chunks.touch(digest) else None
        )
        toucher.start()
        assert not touched.wait(0.3), "a chunk was touched in the middle of a sweep"
    toucher.join(10)
    assert touched.is_set()


def test_a_registered_writer_holds_back_the_sweep(tmp_path: Path, image: Path) -> None:
    files = PointFiles(tmp_path / "backups")
    # A restore (or backup) registered before these chunks were written may need any of them
    # (it may have read an index naming them): the sweep leaves them while it runs.
    with registered_writer(files.root, "a restore elsewhere"):
        point = files.write_point(source_for(image))
        files.delete_point(point.ref)
        pass_one = collect_garbage(files, timedelta(0))
    assert pass_one.chunks_removed == 0
    assert pass_one.chunks_kept_for_writers == 5
    # A writer that died without unregistering (lock released by the kernel) holds nothing.
    (files.root / WRITERS_DIR / "999999-dead.writer").write_text('{"pid": 999999}')
    age_every_chunk(files.root, 1)
    pass_two = collect_garbage(files, timedelta(0))
    assert pass_two.chunks_removed == 5
    assert not list((files.root / WRITERS_DIR).iterdir())


# --- damage ----------------------------------------------------------------------------------


async def test_verify_names_a_damaged_chunk_and_the_next_write_heals_it(
    store: DirectoryBackupStore, image: Path, tmp_path: Path
) -> None:
    first = await store.write_point(source_for(image))
    random_write(image, 8 * MiB, 4 * MiB)  # the first chunk stays shared by both points
    second = await store.write_point(source_for(image))
    digest = first_chunk_digest(image)
    chunk = store.root / ".chunks" / digest[:4] / digest
    with chunk.open("r+b") as damaged:  # one flipped byte inside the stored data
        damaged.seek(1000)
        byte = damaged.read(1)
        damaged.seek(1000)
        damaged.write(bytes([byte[0] ^ 0xFF]))

    report = await store.verify(first.ref)

    assert report.damaged_chunks == (digest,)
    assert set(report.damaged_points) == {first.ref, second.ref}  # not only the one verified
    assert not chunk.exists()
    assert chunk.with_name(digest + ".bad").exists()
    with pytest.raises(BackupDamaged):
        await store.read_disk(second.ref, "vda", tmp_path / "broken.raw")
    assert not (tmp_path / "broken.raw").exists()  # no half-restored disk left behind

    healer = await store.write_point(source_for(image))
    assert healer.figures.bytes_new == CHUNK_SIZE  # exactly the damaged chunk, stored again
    healed = await store.verify()
    assert healed.ok, healed
    await assert_reads_back(store, second.ref, sha256(image), tmp_path)
    record(
        "Backup store: verify",
        "1 byte flipped in a chunk 2 restore points share",
        "found, named, both points reported damaged, healed by the next backup",
    )


async def test_verify_reports_a_tampered_manifest_or_index(
    store: DirectoryBackupStore, image: Path
) -> None:
    point = await store.write_point(source_for(image))
    index = store.root / "points" / VM_UUID / point.ref.point_id / "vda.idx"
    data = bytearray(index.read_bytes())
    data[-1] ^= 1
    index.write_bytes(bytes(data))
    report = await store.verify()
    assert report.damaged_points == (point.ref,)
    assert "index of disk vda" in report.damaged_files[0]
    with pytest.raises(BackupDamaged, match="garbage collection stopped"):
        await store.collect_garbage()


# --- interrupted writes -----------------------------------------------------------------------


async def test_a_write_failing_mid_way_leaves_no_half_point(
    store: DirectoryBackupStore, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = await store.write_point(source_for(image))
    good_hash = sha256(image)
    random_write(image, 0, 16 * MiB)  # four new chunks to store
    before = chunk_files(store.root)
    original_insert = ChunkStore.insert
    calls = 0

    def failing_insert(self: ChunkStore, digest: str, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")
        return original_insert(self, digest, data)

    monkeypatch.setattr(ChunkStore, "insert", failing_insert)
    with pytest.raises(OSError, match="No space"):
        await store.write_point(source_for(image))
    monkeypatch.undo()

    assert [m.ref for m in await store.list_points()] == [good.ref]
    assert list((store.root / "points" / VM_UUID).iterdir()) == [
        store.root / "points" / VM_UUID / good.ref.point_id
    ]
    assert (await store.verify()).ok
    assert len(chunk_files(store.root) - before) == 2  # the orphans
    age_every_chunk(store.root, 1)
    report = await store.collect_garbage()
    assert report.chunks_removed == 2
    assert chunk_files(store.root) == before
    await assert_reads_back(store, good.ref, good_hash, tmp_path)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from core.adapters.backupstore.chunks import ChunkStore
    from core.adapters.backupstore.points import PointFiles
    from core.domain.backups import BackupKind, BackupSource
    from core.adapters.backupstore.image_files import FileDiskReader

    original = ChunkStore.insert
    calls = 0

    def insert(self, digest, data):
        global calls
        calls += 1
        if calls == 3:
            print("half-way", flush=True)
            time.sleep(60)
        return original(self, digest, data)

    ChunkStore.insert = insert
    PointFiles(Path(sys.argv[1])).write_point(BackupSource(
        vm_uuid=sys.argv[3], vm_name="web-01", kind=BackupKind.INCREMENTAL,
        domain_xml="<domain/>", disks={"vda": FileDiskReader(Path(sys.argv[2]))}))
    """
)


def test_a_backup_process_killed_mid_way_leaves_the_store_consistent(
    tmp_path: Path, image: Path
) -> None:
    files = PointFiles(tmp_path / "backups")
    good = files.write_point(source_for(image))
    good_hash = sha256(image)
    before = chunk_files(files.root)
    random_write(image, 0, 16 * MiB)  # four new chunks; the writer dies after storing two
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(files.root), str(image), VM_UUID],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"half-way\n"
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(30)

    # What SIGKILL left: an unfinished point directory, two chunks, the writer's file.
    assert len(list((files.root / "points" / VM_UUID).iterdir())) == 2
    assert len(chunk_files(files.root) - before) == 2
    assert [m.ref for m in files.list_points()] == [good.ref]
    assert verify(files).ok
    age_every_chunk(files.root, 1)
    for directory in (files.root / "points" / VM_UUID).iterdir():
        os.utime(directory, (time.time() - 1, time.time() - 1))
    report = collect_garbage(files, timedelta(0))
    assert report.chunks_removed == 2
    assert chunk_files(files.root) == before
    assert len(list((files.root / "points" / VM_UUID).iterdir())) == 1
    assert not list((files.root / WRITERS_DIR).iterdir())
    restored = tmp_path / "restored.raw"
    files.read_disk(good.ref, "vda", restored)
    assert sha256(restored) == good_hash
    record(
        "Backup store: killed backup",
        "SIGKILL of a backup process half-way through its chunks",
        "no half restore point listed; verify clean; GC removed its 2 orphan chunks",
    )


# --- a store outlives the process that wrote it -----------------------------------------------


async def test_a_fresh_store_lists_and_reads_every_point(
    store: DirectoryBackupStore, image: Path, tmp_path: Path
) -> None:
    written: dict[PointRef, str] = {}
    for step in range(3):
        random_write(image, step * MiB, MiB)
        written[(await store.write_point(source_for(image, f"web-0{step}"))).ref] = sha256(image)
    old_listing = await store.list_points()
    store.close()

    fresh = DirectoryBackupStore(store.root)
    try:
        listing = await fresh.list_points(VM_UUID)
        assert listing == old_listing
        assert [m.vm_name for m in listing] == ["web-02", "web-01", "web-00"]  # newest first
        for ref, expected in written.items():
            await assert_reads_back(fresh, ref, expected, tmp_path)
            assert await fresh.read_blob(ref, "nvram") == NVRAM
        assert await fresh.list_points("00000000-0000-0000-0000-000000000000") == []
    finally:
        fresh.close()


# --- churn: many backups, deletes and collections against a model -----------------------------


def churn(tmp_path: Path, rounds: int, seed: int) -> tuple[int, int]:
    """Backs up a changing disk ``rounds`` times, deleting random points and collecting after
    each; every surviving point must read back exactly, verify clean, and the chunk directory
    must hold exactly the chunks the survivors need. Returns (points written, chunks freed)."""
    rng = random.Random(seed)
    chunk = 64 * 1024  # small chunks: many of them, quickly
    files = PointFiles(tmp_path / "backups", chunk_size=chunk)
    image = make_image(tmp_path / "churn.raw", 4 * MiB)
    expected: dict[PointRef, str] = {}
    freed = 0
    for _ in range(rounds):
        for _ in range(rng.randint(1, 6)):
            offset = rng.randrange(0, 4 * MiB - chunk)
            if rng.random() < 0.3:
                with image.open("r+b") as out:  # a discard: zeros again
                    out.seek(offset)
                    out.write(bytes(rng.randrange(1, 2 * chunk)))
            else:
                random_write(image, offset, rng.randrange(1, 2 * chunk))
        expected[files.write_point(source_for(image)).ref] = sha256(image)
        for ref in [r for r in expected if rng.random() < 0.3]:
            files.delete_point(ref)
            del expected[ref]
        age_every_chunk(files.root, 1)
        freed += collect_garbage(files, timedelta(0)).chunks_removed

        assert {m.ref for m in files.list_points()} == set(expected)
        needed: set[str] = set()
        for manifest in files.list_points():
            needed |= files.index(manifest, "vda").stored_digests()
        assert chunk_files(files.root) == needed
        assert verify(files).ok
        for ref, digest in expected.items():
            restored = tmp_path / "check.raw"
            files.read_disk(ref, "vda", restored)
            assert sha256(restored) == digest, ref
    return rounds, freed


def test_churn_short(tmp_path: Path) -> None:
    churn(tmp_path, int(os.environ.get("SNAPBOT_BACKUP_CHURN_ROUNDS", "6")), seed=7)


@pytest.mark.reliability
def test_churn_long(tmp_path: Path) -> None:
    seed = int(os.environ.get("SNAPBOT_BACKUP_CHURN_SEED", "20260301"))
    written, freed = churn(tmp_path, 60, seed)
    record(
        "Backup store: churn",
        f"{written} backups of a changing disk (seed {seed}), random deletes, GC after each, "
        "every survivor read back and verified each round",
        f"{written} points written, {freed} chunks freed, 0 survivors damaged",
    )


async def test_a_request_after_close_gets_an_answer_not_a_crash(tmp_path: Path) -> None:
    from core.adapters.backupstore.store import BackupStoreClosed

    store = DirectoryBackupStore(tmp_path / "backups")
    store.close()
    with pytest.raises(BackupStoreClosed, match="snapbot is stopping"):
        await store.list_points()
