"""Restore drills over the fake hypervisor, file-backed fake disks, a real backup store in a
temporary directory, a real SQLite catalogue and a fake drill lab: what a user of
``/snapshot drill`` would notice (pass, fail, timeout, refusals), and that the throwaway VM
goes whatever happened."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock
from core.config import Settings
from core.domain.drills import (
    DRILL_VM_PREFIX,
    SCREENSHOT_MAX_BYTES,
    DrillPolicies,
    DrillPolicy,
    DrillResult,
    DrillSource,
    ReadyKind,
    ReadySignal,
)
from core.domain.operation import OperationKind, OperationStatus
from core.domain.retention import RetentionPolicy
from core.domain.schedule import ScheduleTask, parse_when
from core.errors import Conflict, InvalidInput, OperationFailed, SnapshotNotFound, VmNotFound
from core.ports import DrillGuest
from core.services.drills import DrillService
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess
from tests.fakes.drills import FakeDrillLab

WEB = "11111111-1111-1111-1111-111111111111"
MiB = 1024 * 1024


@pytest.fixture
def lab() -> Iterator[FakeDrillLab]:
    made = FakeDrillLab()
    yield made
    made.close()


def drill_core(
    services: Services,
    tmp_path: Path,
    store: DirectoryBackupStore,
    disks: FakeDiskAccess,
    lab: FakeDrillLab,
    policies: DrillPolicies,
) -> Core:
    settings = Settings(
        libvirt_uri="fake:///",
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url="sqlite://:memory:",
        drills=policies,
    )
    return wire(
        settings,
        services.hv,
        services.catalogue,
        SystemClock(),
        libvirt_uri="fake:///",
        store=store,
        disks=disks,
        lab=lab,
    )


CONSOLE = ReadySignal(ReadyKind.CONSOLE, "login:")


@pytest.fixture
def core(
    services: Services,
    tmp_path: Path,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    lab: FakeDrillLab,
) -> Core:
    policies = DrillPolicies((DrillPolicy("web-*", ready=CONSOLE, timeout=30, owner="U_OWNER"),))
    return drill_core(services, tmp_path, backup_store, fake_disks, lab, policies)


def drills_of(core: Core) -> DrillService:
    assert core.drills is not None
    return core.drills


async def backup(core: Core, label: str) -> None:
    assert core.backups is not None
    await core.backups.create_backup("web-01", label, actor=ALICE)


async def test_a_passing_drill_restores_the_newest_point_into_its_own_disk(
    core: Core, fake_disks: FakeDiskAccess, lab: FakeDrillLab, services: Services
) -> None:
    fake_disks.write(WEB, 0, b"old data")
    await backup(core, "night-1")
    fake_disks.write(WEB, 0, b"new data")
    await backup(core, "night-2")
    fake_disks.write(WEB, 0, b"live data")  # after the last point: not in any drill

    outcome = await drills_of(core).run("web-01", actor=ALICE)

    assert outcome.passed
    drill = outcome.drill
    assert drill.label == "night-2"
    assert drill.source is DrillSource.STORE
    assert drill.ready_seconds == pytest.approx(0.5)
    assert drill.screenshot is not None
    assert outcome.owner == "U_OWNER"
    assert outcome.signal == CONSOLE
    (made,) = lab.made
    assert made.name.startswith(DRILL_VM_PREFIX + "web-01-")
    assert made.signal == CONSOLE
    assert lab.contents[made.name]["vda"][:8] == b"new data"
    assert lab.live == set()
    # The original's disk is what it was.
    assert fake_disks.read(WEB, 0, 9) == b"live data"
    ops = [o for o in await services.catalogue.operations() if o.kind is OperationKind.DRILL]
    assert [o.status for o in ops] == [OperationStatus.SUCCEEDED]
    assert "passed" in (ops[0].outcome or "")


async def test_a_named_point_is_drilled_and_a_wrong_name_is_refused(
    core: Core, fake_disks: FakeDiskAccess, lab: FakeDrillLab
) -> None:
    fake_disks.write(WEB, 0, b"first")
    await backup(core, "night-1")
    await backup(core, "night-2")
    outcome = await drills_of(core).run("web-01", "night-1", actor=ALICE)
    assert outcome.drill.label == "night-1"
    with pytest.raises(SnapshotNotFound):
        await drills_of(core).run("web-01", "nigth-1", actor=ALICE)
    with pytest.raises(VmNotFound):
        await drills_of(core).run("web-1", actor=ALICE)
    assert len(lab.made) == 1


async def test_a_vm_never_ready_fails_with_what_was_seen_and_its_vm_is_removed(
    core: Core, lab: FakeDrillLab, services: Services
) -> None:
    await backup(core, "night-1")
    lab.script.ready_after = None
    lab.script.failure = "no console line matched; its console's last lines: Kernel panic"

    outcome = await drills_of(core).run("web-01", actor=ALICE)

    assert not outcome.passed
    assert outcome.drill.result is DrillResult.FAILED
    assert "Kernel panic" in (outcome.drill.error or "")
    assert "within 30 s" in (outcome.drill.error or "")
    assert outcome.drill.ready_seconds is None
    # The screen of a failed boot is kept: it often says why.
    assert outcome.drill.screenshot is not None
    assert lab.live == set()
    assert await services.catalogue.last_passed_drills() == {}
    (recorded,) = await services.catalogue.drills()
    assert recorded.result is DrillResult.FAILED


async def test_a_failure_while_starting_is_reported_and_cleans_up(
    core: Core, lab: FakeDrillLab, services: Services
) -> None:
    await backup(core, "night-1")
    lab.script.start_error = OperationFailed("QEMU refused the configuration", vm="x")
    outcome = await drills_of(core).run("web-01", actor=ALICE)
    assert not outcome.passed
    assert "QEMU refused" in (outcome.drill.error or "")
    assert lab.live == set()
    ops = [o for o in await services.catalogue.operations() if o.kind is OperationKind.DRILL]
    assert [o.status for o in ops] == [OperationStatus.FAILED]


async def test_a_drill_cancelled_midway_still_removes_its_vm(
    core: Core, lab: FakeDrillLab, services: Services
) -> None:
    await backup(core, "night-1")
    lab.script.gate = asyncio.Event()
    task = asyncio.create_task(drills_of(core).run("web-01", actor=ALICE))
    await asyncio.wait_for(lab.script.waiting.wait(), 10)
    assert lab.live == {lab.made[0].name}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lab.live == set()


async def test_a_second_drill_of_the_same_vm_at_once_is_refused(
    core: Core, lab: FakeDrillLab, services: Services
) -> None:
    await backup(core, "night-1")
    lab.script.gate = asyncio.Event()
    first = asyncio.create_task(drills_of(core).run("web-01", actor=ALICE))
    await asyncio.wait_for(lab.script.waiting.wait(), 10)
    with pytest.raises(Conflict, match="running already"):
        await drills_of(core).run("web-01", actor=ALICE)
    lab.script.gate.set()
    assert (await first).passed
    refused = [
        o
        for o in await services.catalogue.operations()
        if o.kind is OperationKind.DRILL and o.status is OperationStatus.REJECTED
    ]
    assert len(refused) == 1


async def test_without_a_signal_or_an_agent_the_drill_says_how_to_configure_one(
    services: Services,
    tmp_path: Path,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    lab: FakeDrillLab,
) -> None:
    core = drill_core(services, tmp_path, backup_store, fake_disks, lab, DrillPolicies())
    await backup(core, "night-1")
    with pytest.raises(InvalidInput, match=r'ready = "console:<regex>"'):
        await drills_of(core).run("web-01", actor=ALICE)
    assert lab.made == []
    # With an agent channel, the agent answering is the default signal.
    lab.guest = DrillGuest(has_agent=True, has_display=False)
    outcome = await drills_of(core).run("web-01", actor=ALICE)
    assert outcome.signal == ReadySignal(ReadyKind.AGENT)
    # Nobody configured an owner: the report mentions who asked.
    assert outcome.owner == ALICE.user


async def test_a_full_snapshot_is_drilled_from_its_disk_state_without_memory(
    core: Core, fake_disks: FakeDiskAccess, lab: FakeDrillLab, services: Services
) -> None:
    fake_disks.write(WEB, 0, b"at snapshot")
    await core.snapshots.create_snapshot("web-01", "before-upgrade", actor=ALICE)
    fake_disks.write(WEB, 0, b"afterwards!")

    outcome = await drills_of(core).run("web-01", actor=ALICE)

    assert outcome.passed
    assert outcome.drill.source is DrillSource.INTERNAL
    assert outcome.memory_not_included
    (made,) = lab.made
    assert lab.contents[made.name]["vda"][:11] == b"at snapshot"
    # The VM's lock was held only for the copy: it is free while the copy boots and after.
    assert await services.catalogue.lock_for_sync(WEB, "test") is not None


async def test_a_run_sweeps_leftovers_and_abandoned_records_first(
    core: Core, lab: FakeDrillLab
) -> None:
    await backup(core, "night-1")
    await drills_of(core).run("web-01", actor=ALICE)
    assert lab.swept == [timedelta(hours=6)]


async def test_status_flags_vms_without_a_passing_drill_in_35_days(
    core: Core, lab: FakeDrillLab
) -> None:
    await backup(core, "night-1")
    await drills_of(core).run("web-01", actor=ALICE)
    status = {s.vm_name: s for s in await drills_of(core).status()}
    assert not status["web-01"].overdue
    assert status["web-01"].last_passed is not None
    assert status["web-02"].overdue
    assert status["web-02"].last_passed is None
    assert await drills_of(core).due(["web-01", "web-02"], days=30) == ["web-02"]


async def test_a_drill_schedule_drills_due_vms_one_at_a_time_and_skips_recent_ones(
    core: Core, lab: FakeDrillLab, services: Services
) -> None:
    await backup(core, "night-1")
    assert core.backups is not None
    await core.backups.create_backup("web-02", "night-1", actor=ALICE)
    schedule = await core.schedules.add(
        "drills",
        "web-*",
        parse_when(["daily", "03:00"], "UTC"),
        None,
        "C1",
        ALICE,
        task=ScheduleTask.DRILL,
    )
    first = await core.runs.run(schedule, datetime(2026, 3, 1, 3, tzinfo=UTC))
    assert first is not None
    assert [o.vm for o in first.outcomes] == ["web-01", "web-02"]
    assert all(o.drill is not None and o.drill.passed for o in first.outcomes)
    assert first.status == "succeeded"
    # Drilled one after the other: never two throwaway VMs at once.
    assert len(lab.made) == 2

    # The next night: both passed within 30 days, nothing is due.
    second = await core.runs.run(schedule, datetime(2026, 3, 2, 3, tzinfo=UTC))
    assert second is not None
    assert second.outcomes == []
    assert len(lab.made) == 2


async def test_a_failed_scheduled_drill_fails_the_run(core: Core, lab: FakeDrillLab) -> None:
    await backup(core, "night-1")
    lab.script.ready_after = None
    schedule = await core.schedules.add(
        "drills",
        "web-01",
        parse_when(["weekly", "sun", "03:00"], "UTC"),
        None,
        "C1",
        ALICE,
        task=ScheduleTask.DRILL,
    )
    report = await core.runs.run(schedule, datetime(2026, 3, 1, 3, tzinfo=UTC))
    assert report is not None
    (outcome,) = report.outcomes
    assert outcome.drill is not None
    assert not outcome.drill.passed
    assert report.status == "failed"
    assert report.summary()["vms"]["web-01"]["drill"] == "failed"  # type: ignore[index]


async def test_a_drill_schedule_takes_no_retention(core: Core) -> None:
    with pytest.raises(InvalidInput, match="drill schedule takes and deletes nothing"):
        await core.schedules.add(
            "drills",
            "all",
            parse_when(["daily", "03:00"], "UTC"),
            RetentionPolicy(keep_last=3),
            "C1",
            ALICE,
            task=ScheduleTask.DRILL,
        )


async def test_a_screenshot_too_large_to_keep_is_dropped_and_the_drill_still_passes(
    core: Core, lab: FakeDrillLab, services: Services
) -> None:
    await backup(core, "night-1")
    lab.script.screenshot = b"\x89PNG" + bytes(SCREENSHOT_MAX_BYTES)
    outcome = await drills_of(core).run("web-01", actor=ALICE)
    assert outcome.passed
    assert outcome.drill.screenshot is None
    (recorded,) = await services.catalogue.drills()
    assert await services.catalogue.drill_screenshot(recorded.id) is None
