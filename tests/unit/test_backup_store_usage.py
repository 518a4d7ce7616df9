"""The backup store's own accounting, on real files: logical and stored sizes, what
deduplication and compression saved, and what deleting points would free, predicted exactly
(garbage collection then frees that much, to the byte)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.domain.backups import CHUNK_SIZE, PointRef
from tests.unit.test_backup_store import (
    age_every_chunk,
    make_image,
    qemu_write,
    random_write,
    source_for,
)

MiB = 1024 * 1024
OTHER_VM = "7a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-img and qemu-io (qemu-utils)",
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DirectoryBackupStore]:
    backups = DirectoryBackupStore(tmp_path / "backups", gc_safety_margin=timedelta(0))
    yield backups
    backups.close()


def chunk_sizes(root: Path) -> dict[str, int]:
    """What ``du`` would add up: every chunk file and its size, read independently."""
    return {p.name: p.stat().st_size for p in (root / ".chunks").glob("*/*") if len(p.name) == 64}


async def test_usage_counts_logical_stored_and_what_dedup_and_compression_saved(
    store: DirectoryBackupStore, tmp_path: Path
) -> None:
    image = make_image(tmp_path / "vda.raw", 64 * MiB)
    random_write(image, 0, 16 * MiB)  # 4 chunks nothing compresses
    qemu_write(image, 40 * MiB, CHUNK_SIZE, 0x5A)  # 1 chunk that compresses to almost nothing
    await store.write_point(source_for(image))
    random_write(image, 0, CHUNK_SIZE)  # one chunk changes
    await store.write_point(source_for(image))

    usage = await store.usage()

    sizes = chunk_sizes(store.root)
    assert usage.points == 2
    assert usage.chunks == len(sizes) == 6
    assert usage.stored_bytes == sum(sizes.values())
    assert usage.logical_bytes == 2 * 64 * MiB
    assert usage.referenced_bytes == 2 * 5 * CHUNK_SIZE
    assert usage.unique_bytes == 6 * CHUNK_SIZE
    assert usage.dedup_saved_bytes == 4 * CHUNK_SIZE  # the second point stored one chunk of five
    assert usage.zeros_skipped_bytes == 2 * (64 * MiB - 5 * CHUNK_SIZE)
    # The pattern chunk is almost all of what compression saved; random data saves nothing.
    assert CHUNK_SIZE - 64 * 1024 < usage.compression_saved_bytes < CHUNK_SIZE
    assert usage.garbage_bytes == 0
    statvfs = os.statvfs(store.root)
    assert usage.total_bytes == statvfs.f_blocks * statvfs.f_frsize
    assert usage.free_bytes is not None
    assert abs(usage.free_bytes - statvfs.f_bavail * statvfs.f_frsize) < 64 * MiB


async def test_deleting_frees_exactly_what_exclusive_bytes_predicted(
    store: DirectoryBackupStore, tmp_path: Path
) -> None:
    image = make_image(tmp_path / "vda.raw", 32 * MiB)
    random_write(image, 0, 12 * MiB)
    first = await store.write_point(source_for(image))
    before_second = set(chunk_sizes(store.root))
    random_write(image, 0, 2 * CHUNK_SIZE)
    second = await store.write_point(source_for(image))
    random_write(image, 0, CHUNK_SIZE)
    third = await store.write_point(source_for(image))
    sizes = chunk_sizes(store.root)

    # The second point's own chunks: written for it, and changed again before the third.
    only_second = await store.exclusive_bytes([second.ref])
    own = (set(sizes) - before_second) - {d for d in sizes if d in _digests_of(store, third.ref)}
    assert len(own) == 1
    assert only_second == sum(sizes[d] for d in own)
    # All of them: everything stored.
    assert await store.exclusive_bytes([first.ref, second.ref, third.ref]) == sum(sizes.values())
    # A chunk every point shares is nobody's alone.
    assert await store.exclusive_bytes([]) == 0
    both = await store.exclusive_bytes([first.ref, second.ref])
    assert both > only_second

    await store.delete_point(second.ref)
    garbage = (await store.usage()).garbage_bytes
    assert garbage == only_second  # counted as garbage until collected
    age_every_chunk(store.root, 1)
    report = await store.collect_garbage()
    assert report.bytes_freed == only_second
    after = await store.usage()
    assert after.garbage_bytes == 0
    assert after.stored_bytes == sum(chunk_sizes(store.root).values())


async def test_points_of_another_vm_keep_shared_chunks_from_being_counted(
    store: DirectoryBackupStore, tmp_path: Path
) -> None:
    image = make_image(tmp_path / "vda.raw", 16 * MiB)
    random_write(image, 0, 8 * MiB)
    mine = await store.write_point(source_for(image))
    theirs = await store.write_point(replace(source_for(image, "web-01-copy"), vm_uuid=OTHER_VM))
    assert await store.exclusive_bytes([mine.ref]) == 0  # the copy uses every chunk too
    assert await store.exclusive_bytes([mine.ref, theirs.ref]) == sum(
        chunk_sizes(store.root).values()
    )
    # A point that is not there (deleted meanwhile) frees nothing and breaks nothing.
    gone = PointRef(OTHER_VM, "20200101T000000Z-00000000")
    assert await store.exclusive_bytes([gone]) == 0


def _digests_of(store: DirectoryBackupStore, ref: PointRef) -> set[str]:
    index = (store.root / "points" / ref.vm_uuid / ref.point_id / "vda.idx").read_bytes()
    header = 8 + 8 + 8 + 8 + 32
    body = index[header:]
    return {body[i : i + 32].hex() for i in range(0, len(body), 32)} - {bytes(32).hex()}
