"""The test guest writes known data to its disk on command, and the host reads it back from the
image file: what the backup tests build on ("the guest changed these MiB between two backups;
each restore point gives back exactly its content").
"""

from __future__ import annotations

import hashlib

import libvirt
import pytest

from tests.system.conftest import Guest
from tests.system.guest.guest import (
    MIB,
    GuestCommandError,
    disk_sha256,
    disk_virtual_size,
    expected_pattern,
    guest_write,
    guest_zero,
    read_disk_counter,
    read_disk_range,
    wait_for_counter,
)

pytestmark = pytest.mark.system

CHUNK = 4 * MIB


def test_patterns_give_distinct_non_zero_chunks_for_every_seed_and_offset() -> None:
    # The dedup store names 4 MiB chunks by their hash: a repeated or zero chunk would make a
    # backup of changed data look smaller than the change.
    chunks = [
        expected_pattern(seed, offset, 4)
        for seed in ("a", "b", "a2")
        for offset in (1, 4, 5, 8, 12)
    ]
    assert all(len(chunk) == CHUNK for chunk in chunks)
    assert len({hashlib.sha256(chunk).digest() for chunk in chunks}) == len(chunks)
    assert all(chunk.count(0) == 0 for chunk in chunks)


def test_guest_writes_known_data_that_the_host_reads_from_the_image(
    guest: Guest, libvirt_conn: libvirt.virConnect
) -> None:
    size = disk_virtual_size(guest.disk)

    guest_write(guest, 4, 8, "a")

    assert read_disk_range(guest.disk, 4 * MIB, 8 * MIB) == expected_pattern("a", 4, 8)
    # Nothing outside the range: MiB 1-3 and 12 to the end are still zeros.
    assert read_disk_range(guest.disk, MIB, 3 * MIB) == bytes(3 * MIB)
    assert read_disk_range(guest.disk, 12 * MIB, size - 12 * MIB) == bytes(size - 12 * MIB)
    # An unaligned range reads the same bytes as the aligned one.
    assert (
        read_disk_range(guest.disk, 5 * MIB - 7, 100)
        == expected_pattern("a", 4, 2)[MIB - 7 : MIB + 93]
    )

    guest_zero(guest, 6, 2)

    assert read_disk_range(guest.disk, 4 * MIB, 8 * MIB) == (
        expected_pattern("a", 4, 2) + bytes(2 * MIB) + expected_pattern("a", 8, 4)
    )

    # MiB 0 is the counter's: the guest refuses it, and the counter went on undisturbed.
    with pytest.raises(GuestCommandError, match="mib0"):
        guest_write(guest, 0, 1, "a")
    with pytest.raises(GuestCommandError, match="past-end"):
        guest_write(guest, size // MIB - 1, 2, "a")
    counted = wait_for_counter(guest.serial_log, after_offset=guest.log_size(), timeout=30.0)
    assert counted.disk == counted.mem - 1

    # The whole-disk hash, on a stopped guest so the counter stands still: the counter's MiB as
    # the image holds it, the pattern, the zeroed hole, zeros to the end.
    libvirt_conn.lookupByName(guest.name).destroy()
    counter_mib = read_disk_range(guest.disk, 0, MIB)
    assert int(counter_mib[:15]) == read_disk_counter(guest.disk)
    expected = hashlib.sha256(counter_mib + bytes(3 * MIB))
    expected.update(expected_pattern("a", 4, 2) + bytes(2 * MIB) + expected_pattern("a", 8, 4))
    expected.update(bytes(size - 12 * MIB))
    assert disk_sha256(guest.disk) == expected.hexdigest()
