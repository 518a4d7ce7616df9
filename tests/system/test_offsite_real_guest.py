"""The offsite copy on the real counter guest (issue 10, "the offsite copy restores a deleted VM
with the local store removed"): back the guest up, copy the store to a real S3-compatible
server (moto's, over HTTP), delete the VM and its disk, delete the whole local store, then a
new snapbot wired with only the bucket (its own empty catalogue, no SNAPBOT_BACKUP_DIR) lists
the VM's restore point and defines the VM again, which boots from the restored disk."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import timedelta
from pathlib import Path

import libvirt
import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.adapters.offsite import Bucket, S3OffsiteStore
from core.bootstrap import wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import OffsiteSettings, Settings
from core.domain.backups import PointRef
from core.domain.vm import VmState
from core.errors import InvalidInput
from tests.conftest import ALICE
from tests.fakes.catalogue import MemoryCatalogue
from tests.fakes.s3 import new_bucket, s3_endpoint
from tests.system.conftest import TEST_URI, Guest, remove_guest
from tests.system.guest.guest import MIB
from tests.system.test_backups_real_guest import (
    after_counter,
    booted_anew,
    counter_in,
    disk_after_counter,
    last_line,
    write,
)

__all__ = ["s3_endpoint"]

pytestmark = pytest.mark.system


async def test_the_offsite_copy_restores_a_deleted_vm_with_the_local_store_gone(
    catalogue: TortoiseCatalogue,
    guest: Guest,
    workdir: Path,
    libvirt_conn: libvirt.virConnect,
    s3_endpoint: str,
) -> None:
    root = workdir / "store"
    bucket = new_bucket(s3_endpoint)
    connection = LibvirtConnection(TEST_URI, workers=4)
    hv = LibvirtHypervisor(connection)
    disks = LibvirtDiskAccess(connection)
    local = DirectoryBackupStore(root, gc_safety_margin=timedelta(0))
    copy = S3OffsiteStore(Bucket(s3_endpoint, bucket), root, delete_after=timedelta(days=14))
    reader = S3OffsiteStore(Bucket(s3_endpoint, bucket), None, delete_after=timedelta(days=14))
    settings = Settings(
        libvirt_uri=TEST_URI,
        libvirt_uri_explicit=True,
        data_dir=workdir,
        database_url="sqlite://:memory:",
        backup_dir=root,
        offsite=OffsiteSettings(s3_endpoint, bucket),
    )
    try:
        core = wire(
            settings,
            hv,
            catalogue,
            SystemClock(),
            libvirt_uri=TEST_URI,
            store=local,
            disks=disks,
            offsite=copy,
        )
        assert core.backups is not None
        assert core.offsite is not None
        await write(guest, "offsite")
        original_uuid = libvirt_conn.lookupByName(guest.name).UUIDString()
        backup = await core.backups.create_backup(guest.name, "before-loss", actor=ALICE)
        assert backup.snapshot.point_id is not None
        ref = PointRef(backup.snapshot.vm_uuid, backup.snapshot.point_id)
        raw = workdir / "point.raw"
        await local.read_disk(ref, "vda", raw)
        point = await asyncio.to_thread(raw.read_bytes)
        raw.unlink()
        point_counter = counter_in(point)
        # The backup's reply did not wait for the copy, which runs after it; this waits for it
        # (one copy at a time) and finds nothing left to upload.
        started = time.monotonic()
        again = await core.offsite.copy_new()
        assert again.points_copied == ()
        view = await core.offsite.view()
        assert view.status.pending == ()
        assert view.status.offsite_points == 1
        print(
            f"\noffsite copy after the backup: {view.status.chunks} pieces, "
            f"{view.status.stored_bytes / MIB:.1f} MiB in the bucket; waited "
            f"{time.monotonic() - started:.2f} s for it"
        )
        verified = await core.offsite.verify()
        assert verified.ok
        assert ref in verified.points_checked

        # The VM is deleted with its disk, and the whole local store is lost.
        old_boot = (await last_line(guest.serial_log)).boot
        await asyncio.to_thread(remove_guest, guest.name)
        guest.disk.unlink()
        local.close()
        await asyncio.to_thread(shutil.rmtree, root)

        clock = SystemClock()
        fresh = wire(
            Settings(
                libvirt_uri=TEST_URI,
                libvirt_uri_explicit=True,
                data_dir=workdir,
                database_url="sqlite://:memory:",
                offsite=OffsiteSettings(s3_endpoint, bucket),
            ),
            hv,
            MemoryCatalogue(clock),  # type: ignore[arg-type]
            clock,
            libvirt_uri=TEST_URI,
            store=reader,
            disks=disks,
            offsite=reader,
        )
        assert fresh.backups is not None
        groups = {g.vm_name: g for g in await fresh.snapshots.list_snapshots()}
        assert [s.label for s in groups[guest.name].snapshots] == ["before-loss"]

        offset = guest.log_size()
        started = time.monotonic()
        result = await fresh.backups.restore_as(guest.name, "before-loss", None, actor=ALICE)
        print(f"restore of the deleted VM from the bucket: {time.monotonic() - started:.2f} s")

        assert result.created
        assert result.vm_state is VmState.RUNNING
        dom = libvirt_conn.lookupByName(guest.name)
        assert dom.UUIDString() == original_uuid
        booted = await booted_anew(guest.serial_log, offset, old_boot)
        assert booted.disk == point_counter
        assert await after_counter(guest.disk) == disk_after_counter("offsite")
        with pytest.raises(InvalidInput, match="read-only"):
            await fresh.backups.create_backup(guest.name, "after", actor=ALICE)
    finally:
        await disks.close()
        local.close()
        copy.close()
        reader.close()
        await hv.close()
