"""The backup store's file formats and plain values: what a reader accepts, and that every
kind of damage to a chunk, an index or a manifest is told apart from good data."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime

import pytest

from core.adapters.backupstore.chunks import HEADER_SIZE, decode_chunk, encode_chunk
from core.adapters.backupstore.index import decode_index, encode_index
from core.adapters.backupstore.manifest import decode_manifest, encode_manifest
from core.domain.backups import (
    BackupDamaged,
    BackupKind,
    BackupSource,
    BlobRecord,
    DiskIndex,
    DiskRecord,
    Manifest,
    PointRef,
    TransferFigures,
    new_point_id,
    points_needing,
)
from core.errors import InvalidInput

UUID = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
A, B = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()


def test_chunks_round_trip_compressed_or_not() -> None:
    for data in (bytes(1000) + b"x", os.urandom(4096)):
        digest = hashlib.sha256(data).hexdigest()
        stored = encode_chunk(data)
        assert decode_chunk(stored, digest) == data
    assert len(encode_chunk(bytes(4096) + b"x")) < 200  # compressible data is compressed
    assert len(encode_chunk(os.urandom(4096))) == 4096 + HEADER_SIZE  # random data is not


@pytest.mark.parametrize("position", [0, 12, HEADER_SIZE + 3, -1])
def test_any_flipped_byte_in_a_chunk_is_detected(position: int) -> None:
    data = os.urandom(2000) + bytes(2000)
    stored = bytearray(encode_chunk(data))
    stored[position] ^= 0x01
    with pytest.raises(BackupDamaged):
        decode_chunk(bytes(stored), hashlib.sha256(data).hexdigest())


def test_a_chunk_under_another_name_is_detected() -> None:
    with pytest.raises(BackupDamaged, match="SHA-256"):
        decode_chunk(encode_chunk(b"a"), B)


def test_index_round_trip_and_damage() -> None:
    index = DiskIndex("vda", 10, (A, None, B), chunk_size=4)
    encoded = encode_index(index)
    assert decode_index("vda", encoded) == index
    damaged = bytearray(encoded)
    damaged[-5] ^= 0x10
    with pytest.raises(BackupDamaged, match="checksum"):
        decode_index("vda", bytes(damaged))
    with pytest.raises(BackupDamaged):
        decode_index("vda", encoded[:-1])


def test_index_must_list_every_chunk_of_the_disk() -> None:
    with pytest.raises(InvalidInput, match="2 chunks listed, a disk of 10 bytes has 3"):
        DiskIndex("vda", 10, (A, B), chunk_size=4)


def manifest() -> Manifest:
    return Manifest(
        ref=PointRef(UUID, new_point_id(datetime(2026, 3, 1, 2, tzinfo=UTC))),
        vm_name="web-01",
        created_at=datetime(2026, 3, 1, 2, 0, 5, 123456, tzinfo=UTC),
        kind=BackupKind.INCREMENTAL,
        domain_xml="<domain><name>web-01</name><description>é</description></domain>",
        disks=(DiskRecord("vda", 10, 3, "0" * 64, TransferFigures(10, 8, 6, 0.25)),),
        blobs=(BlobRecord("nvram", 3, A),),
    )


def test_manifest_round_trip_and_tamper_detection() -> None:
    original = manifest()
    encoded = encode_manifest(original)
    assert decode_manifest(encoded, "here") == original
    tampered = encoded.replace(b'"web-01"', b'"web-02"')
    with pytest.raises(BackupDamaged, match="checksum"):
        decode_manifest(tampered, "here")
    with pytest.raises(BackupDamaged, match="not a manifest"):
        decode_manifest(b"{", "here")


def test_point_ids_sort_by_time_and_are_checked() -> None:
    point_id = new_point_id(datetime(2026, 3, 1, 2, 0, 5, tzinfo=UTC))
    assert point_id.startswith("20260301T020005Z-")
    with pytest.raises(InvalidInput, match="restore point id"):
        PointRef(UUID, "../../etc")
    with pytest.raises(InvalidInput, match="VM UUID"):
        PointRef("web-01", point_id)


def test_names_that_would_escape_the_point_directory_are_refused() -> None:
    for target in ("../vda", "", "VDA", "a/b"):
        with pytest.raises(InvalidInput, match="cannot be stored"):
            BackupSource(UUID, "web-01", BackupKind.INCREMENTAL, "<d/>", {target: "/x"})
    with pytest.raises(InvalidInput, match="no disk"):
        BackupSource(UUID, "web-01", BackupKind.INCREMENTAL, "<d/>", {})


def test_points_needing_a_chunk() -> None:
    one, two = (
        PointRef(UUID, "20260301T020000Z-00000001"),
        PointRef(UUID, "20260301T030000Z-00000002"),
    )
    indexes = {
        one: [DiskIndex("vda", 8, (A, None), chunk_size=4)],
        two: [DiskIndex("vda", 8, (B, None), chunk_size=4)],
    }
    assert points_needing(indexes, [A]) == (one,)
    assert points_needing(indexes, [A, B]) == (one, two)
    assert points_needing(indexes, []) == ()
