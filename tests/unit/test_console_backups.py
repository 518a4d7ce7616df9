"""Incremental snapshots from the console, as an operator types them: take one (the reply
says what it read and stored), list them by type, restore in place, restore a copy, bring back
a deleted VM, archive a full snapshot."""

from __future__ import annotations

import io

from bot.console import Console
from core.bootstrap import Core
from core.domain.snapshot import SnapshotKind
from core.domain.vm import VmState
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess

WEB = "11111111-1111-1111-1111-111111111111"
MIB = 1024 * 1024


async def run(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    status = await Console(core, io.StringIO(script), out).run()
    return status, out.getvalue()


async def test_incrementals_store_only_new_data_and_list_with_their_sizes(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, b"A" * (2 * MIB))
    await services.service.create_snapshot("web-01", "internal", actor=ALICE)
    status, out = await run(core, "/snapshot web-01 first --incremental\n")
    assert status == 0, out
    assert "Incremental snapshot `first` of web-01 stored in the backup store" in out
    assert "crash-consistent: no guest agent answered" in out.lower()
    fake_disks.write(WEB, 8 * MIB, b"B" * MIB)
    status, out = await run(core, "/snapshot web-01 second --incremental\n/snapshot list web-01\n")
    assert status == 0, out
    # the second read both chunks with data but only the changed one was new
    assert "read 8.0 MiB, 4.0 MiB new to the backup store" in out, out
    listing = out[out.index("*web-01*") :]
    assert "first " in listing
    assert "incremental disk" in listing
    assert "logical 16.0 MiB · added 4.0 MiB" in listing
    assert "internal " in listing
    assert "full disk+memory" in listing
    assert "backup store: 2 restore point(s)" in listing


async def test_restore_in_place_needs_the_name_and_keeps_internal_snapshots(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, b"good" * 1024)
    status, out = await run(core, "/snapshot web-01 good --incremental\n")
    assert status == 0, out
    await services.service.create_snapshot("web-01", "internal", actor=ALICE)
    fake_disks.write(WEB, 0, b"BAD!" * 1024)

    status, out = await run(core, "/restore web-01 good\nweb-02\n")
    assert "no memory state" in out
    assert "internal snapshots are kept" in out
    assert "Restore cancelled: you typed 'web-02'" in out
    assert fake_disks.read(WEB, 0, 4) == b"BAD!"

    status, out = await run(core, "/restore web-01 good\nweb-01\n")
    assert status == 0, out
    assert "web-01's disks restored to `good`" in out, out
    assert "Safety snapshot of the state before" in out
    assert fake_disks.read(WEB, 0, 4) == b"good"
    labels = {s.label for s in await services.catalogue.snapshots(WEB)}
    assert "internal" in labels, "the VM's internal snapshots survive"


async def test_restore_as_a_copy_and_a_deleted_vm_comes_back(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, b"data" * 1024)
    await run(core, "/snapshot web-01 point --incremental\n")

    status, out = await run(core, "/restore web-01 point --as web-01-copy\nweb-01-copy\n")
    assert status == 0, out
    assert "define a new VM web-01-copy" in out
    assert "Type the new VM's name (web-01-copy) to confirm:" in out
    assert "New VM web-01-copy defined from `point` of web-01" in out, out
    assert "new UUID and new MAC addresses" in out
    copy = await services.hv.get_vm("web-01-copy")
    assert copy.state is VmState.SHUT_OFF
    assert fake_disks.read(copy.uuid, 0, 4) == b"data"

    # The VM is undefined and its disk deleted: its restore points outlive it.
    del services.hv.vms[WEB]
    fake_disks.disk(WEB).unlink()
    status, out = await run(core, "/restore web-01\n/restore web-01 point\nweb-01\n")
    assert status == 0, out
    assert "Which snapshot of web-01?" in out
    assert "web-01 no longer exists. This will define it again" in out
    assert "web-01 is defined again from `point`" in out, out
    back = await services.hv.get_vm("web-01")
    assert back.uuid == WEB
    assert fake_disks.read(WEB, 0, 4) == b"data"


async def test_archive_says_the_memory_goes_and_moves_the_snapshot(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    await services.service.create_snapshot("web-01", "old", actor=ALICE)
    status, out = await run(core, "/snapshot archive web-01 old\nweb-01\n/snapshot list web-01\n")
    assert status == 0, out
    assert "Its memory state (" in out
    assert "is not kept" in out
    assert "Archived `old` of web-01" in out, out
    (snap,) = await services.catalogue.snapshots(WEB)
    assert snap.kind is SnapshotKind.ARCHIVED
    assert "archived disk" in out


async def test_wrong_new_vm_name_is_refused_before_anything(core: Core) -> None:
    status, out = await run(core, "/restore web-01 x --as 'web 01'\n")
    assert status == 1
    assert "the new VM's name 'web 01' contains a space" in out


async def test_an_incremental_schedule_and_a_verify_schedule_report_what_they_did(
    core: Core, services: Services, fake_disks: FakeDiskAccess
) -> None:
    from bot.console import ConsoleReporter
    from scheduler.service import build_scheduler

    fake_disks.write(WEB, 0, b"n" * MIB)
    out = io.StringIO()
    scheduler = build_scheduler(core, ConsoleReporter(out))
    script = (
        "/snapshot schedule add nightly web-01 daily 02:00 --incremental --keep-last 5\n"
        "/snapshot schedule add check web-01 daily 03:00 --verify\n"
        "/snapshot schedule add bad web-01 daily 04:00 --verify --keep-last 2\n"
        "/snapshot schedule list\n"
        "/snapshot schedule run nightly\n"
        "/snapshot schedule run check\n"
    )
    status = await Console(core, io.StringIO(script), out, scheduler).run()
    text = out.getvalue()
    assert status == 1, "the verify schedule with a policy is refused"
    assert "a --verify schedule deletes nothing" in text
    assert "daily at 02:00 UTC; incremental snapshots (backup store); keep last=5" in text
    assert "daily at 03:00 UTC; verification of the backup store; reports to" in text
    assert "web-01: `nightly-" in text
    assert "4.0 MiB new to the backup store" in text
    assert "web-01: verified 1 restore point(s)" in text
    assert "intact" in text
    (point,) = await services.catalogue.snapshots(WEB)
    assert point.kind is SnapshotKind.INCREMENTAL


async def test_without_a_backup_store_the_reply_says_how_to_configure_one(
    core: Core, services: Services
) -> None:
    from dataclasses import replace

    status, out = await run(
        replace(core, backups=None),
        "/snapshot web-01 x --incremental\n"
        "/snapshot schedule add nightly web-01 daily 02:00 --incremental\n",
    )
    assert status == 1
    assert out.count("No backup store is configured") == 2
    assert "Set SNAPBOT_BACKUP_DIR" in out
    assert await services.catalogue.snapshots() == []
    assert await core.schedules.list() == []
