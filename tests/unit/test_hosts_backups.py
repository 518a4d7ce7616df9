"""Incremental snapshots with several hosts: each VM's disks go through its own host's disk
access, and a VM defined anew from the backup store lands on the host snapbot runs on."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from core.adapters.backupstore import DirectoryBackupStore
from core.bootstrap import wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.domain.hosts import HostConfig
from tests.conftest import ALICE
from tests.fakes.disks import FakeDiskAccess
from tests.unit.test_hosts import WEB_ON_1, WEB_ON_2, settings_for, two_hosts

MiB = 1024 * 1024


async def test_each_vm_is_backed_up_through_its_own_host_and_copies_land_at_home(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, hv2, hosts = two_hosts()
    # hv1 is the machine snapbot runs on.
    hosts[0] = (HostConfig("hv1", "qemu:///system"), hv1)
    disks1 = FakeDiskAccess(hv1, tmp_path / "hv1")
    disks2 = FakeDiskAccess(hv2, tmp_path / "hv2")
    store = DirectoryBackupStore(tmp_path / "store", gc_safety_margin=timedelta(0))
    try:
        core = wire(
            settings_for(tmp_path, hosts),
            list(hosts),
            catalogue,
            SystemClock(),
            libvirt_uri="qemu:///system, " + hv2.uri,
            backoff=(0.05,),
            store=store,
            per_host_disks={"hv1": disks1, "hv2": disks2},
        )
        await core.watch.connect_once()
        assert core.backups is not None
        on_2 = os.urandom(MiB)
        disks2.write(WEB_ON_2.uuid, 0, on_2)
        disks1.write(WEB_ON_1.uuid, 0, os.urandom(MiB))

        await core.backups.create_backup("hv2/web-01", "nightly", actor=ALICE)

        assert ("backup_view", "web-01") in disks2.calls
        assert disks1.calls == []
        # a copy of hv2's VM is defined where snapbot can write images: hv1
        await core.backups.restore_as("hv2/web-01", "nightly", "web-01-copy", actor=ALICE)
        copy = await hv1.get_vm("web-01-copy")
        assert disks1.read(copy.uuid, 0, MiB) == on_2
        assert [c for c in disks2.calls if c[0] == "restore_as_new"] == []
    finally:
        store.close()
