"""The scheduler with a controllable clock: what runs, what is missed, what is skipped, and
that a slot runs once however many schedulers share the database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from bot import messages
from core.bootstrap import Core, wire
from core.domain.operation import OperationKind
from core.domain.retention import RetentionPolicy
from core.domain.schedule import Schedule, parse_when
from core.domain.snapshot import Hold, HoldKind, Origin, Snapshot
from core.errors import InvalidInput, OperationFailed
from core.services.reports import Digest, RunReport
from scheduler.service import SchedulerService, build_scheduler
from scheduler.timing import due, fire_times
from tests.conftest import ALICE, Services

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


@dataclass
class Reports:
    runs: list[RunReport] = field(default_factory=list)
    reminders: list[Snapshot] = field(default_factory=list)
    digests: list[Digest] = field(default_factory=list)

    async def run_report(self, report: RunReport) -> None:
        self.runs.append(report)

    async def hold_reminder(self, snapshot: Snapshot) -> None:
        self.reminders.append(snapshot)

    async def digest(self, digest: Digest) -> None:
        self.digests.append(digest)


def nightly(**overrides: object) -> Schedule:
    schedule = Schedule(
        id=0,
        name="nightly",
        vms="web-*",
        when=parse_when(["daily", "02:00"], "UTC"),
        policy=RetentionPolicy.from_counts(last=2),
        channel="C_OPS",
        owner="U_OWNER",
        created_at=DAY1,
    )
    return replace(schedule, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def clocked(core: Core, services: Services) -> tuple[Core, FakeClock]:
    """The core of a process whose clock the test moves (every service reads it)."""
    clock = FakeClock(DAY1)
    return wire(
        core.settings, services.hv, services.catalogue, clock, libvirt_uri="fake:///"
    ), clock


async def started(core: Core, reports: Reports) -> SchedulerService:
    service = build_scheduler(core, reports)
    await service.start()
    assert service.is_leader
    await service.wait_idle()  # the start-up tick (catch-up) has run
    return service


def test_fire_times_follow_the_zone_and_weekdays() -> None:
    when = parse_when(["weekly", "sun", "03:30"], "Europe/Berlin")
    times = fire_times(when, DAY1, DAY1 + timedelta(days=15))
    assert [t.isoformat() for t in times] == [
        "2026-03-08T02:30:00+00:00",
        "2026-03-15T02:30:00+00:00",
    ]
    with pytest.raises(InvalidInput, match="HH:MM"):
        parse_when(["daily", "25:00"], "UTC")
    with pytest.raises(InvalidInput, match="five fields"):
        parse_when(["cron", "0 2 * *"], "UTC")
    with pytest.raises(InvalidInput, match="not a time zone"):
        parse_when(["daily", "02:00"], "Mars/Base")


def test_due_on_time_catch_up_and_too_late() -> None:
    schedule = nightly(last_fire=DAY1 + timedelta(hours=2))
    on_time = due(schedule, DAY1 + timedelta(days=1, hours=2, seconds=5))
    assert on_time.run == DAY1 + timedelta(days=1, hours=2)
    assert on_time.missed == ()
    assert not on_time.catch_up
    # down over three slots, back 30 min after the third: one catch-up, three misses
    back = due(schedule, DAY1 + timedelta(days=3, hours=2, minutes=30))
    assert back.catch_up
    assert back.run == DAY1 + timedelta(days=3, hours=2)
    assert len(back.missed) == 3
    # back after the grace window: no run, every slot reported
    late = due(schedule, DAY1 + timedelta(days=3, hours=4))
    assert late.run is None
    assert len(late.missed) == 3


async def test_a_daily_schedule_fires_once_a_day(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked
    await services.catalogue.add_schedule(nightly())
    reports = Reports()
    service = await started(core, reports)
    try:
        for day in range(3):
            slot = DAY1 + timedelta(days=day, hours=2)
            for offset in (timedelta(seconds=1), timedelta(seconds=20), timedelta(hours=3)):
                clock.moment = slot + offset
                await service.tick()
        assert [r.fire_time for r in reports.runs] == [
            DAY1 + timedelta(days=d, hours=2) for d in range(3)
        ]
        labels = sorted(
            s.label for s in await services.catalogue.snapshots() if s.vm_name == "web-01"
        )
        assert labels == ["nightly-20260303-0200", "nightly-20260304-0200"], "pruned to last=2"
        assert all(not r.missed for r in reports.runs)
        assert "✅ *Schedule nightly* run for 2026-03-04 02:00:00 UTC" in messages.run_report(
            reports.runs[-1]
        )
    finally:
        await service.stop()


async def test_downtime_over_three_slots_gives_one_catch_up_and_three_reported_misses(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked
    await services.catalogue.add_schedule(nightly(last_fire=DAY1 + timedelta(hours=2)))
    reports = Reports()
    clock.moment = DAY1 + timedelta(days=3, hours=2, minutes=20)
    service = await started(core, reports)  # start-up catches up by itself
    try:
        await service.tick()
        (report,) = reports.runs
        assert report.catch_up
        assert len(report.missed) == 3
        text = messages.run_report(report)
        assert "catch-up run" in text
        assert "Missed 3 run(s)" in text
    finally:
        await service.stop()


async def test_a_busy_vm_is_skipped_and_reported_and_a_failed_one_is_not_pruned(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked
    for n in range(3):
        services.hv._clock += 60
        await services.service.create_snapshot(
            "web-02", f"old-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )
    await services.catalogue.add_schedule(nightly())
    reports = Reports()
    service = await started(core, reports)
    try:
        web01 = await services.hv.get_vm("web-01")
        services.hv.fail["create_snapshot"] = OperationFailed("disk full", vm="web-02")
        async with services.runner.run(OperationKind.RESTORE, web01, ALICE, _no_progress):
            clock.moment = DAY1 + timedelta(hours=2, seconds=3)
            (report,) = await service.tick()
        by_vm = {o.vm: o for o in report.outcomes}
        assert by_vm["web-01"].skipped
        assert by_vm["web-02"].error is not None
        assert not by_vm["web-02"].skipped
        assert by_vm["web-02"].prune is None, "no prune after a failed snapshot"
        assert len([s for s in await services.catalogue.snapshots() if s.vm_name == "web-02"]) == 3
        text = messages.run_report(report)
        assert "web-01: skipped — web-01 is busy: restore by U_ALICE" in text
        assert "web-02: FAILED" in text
        assert "<@U_OWNER>" in text, "failures mention the schedule's owner"
        # a manual prune of that VM is refused while its scheduled snapshots fail
        preview = await core.pruning.preview("web-02", RetentionPolicy.from_counts(last=1))
        (plan,) = preview.plans
        assert plan.to_delete == ()
        assert plan.refused is not None
        assert "newest scheduled snapshot failed" in plan.refused
    finally:
        await service.stop()


async def test_two_schedulers_on_one_database_run_a_slot_once(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked
    await services.catalogue.add_schedule(nightly())
    first, second = Reports(), Reports()
    a = build_scheduler(core, first)
    # a second process: same database, its own owner id
    other = wire(core.settings, services.hv, services.catalogue, core.clock, libvirt_uri="fake:///")
    b = build_scheduler(other, second)
    await a.start()
    await b.start()
    try:
        assert a.is_leader != b.is_leader, "one leader"
        # even if both believed they lead (a lease lost mid-run), the slot row lets one in
        a.token = b.token = 1
        clock.moment = DAY1 + timedelta(hours=2, seconds=2)
        await asyncio.gather(a.tick(), b.tick())
        runs = await services.catalogue.runs()
        assert len(runs) == 1
        assert len(first.runs) + len(second.runs) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_verified_holds_are_reminded_daily_and_expired_holds_released(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked
    created = await services.service.create_snapshot("web-01", "pre-change", actor=ALICE)
    created2 = await services.service.create_snapshot("web-01", "keep-a-week", actor=ALICE)
    snap, snap2 = created.snapshot, created2.snapshot
    await services.catalogue.set_hold(snap.vm_uuid, snap.libvirt_name, Hold(HoldKind.VERIFIED))
    await services.catalogue.set_hold(
        snap2.vm_uuid,
        snap2.libvirt_name,
        Hold(HoldKind.UNTIL, snap2.created_at + timedelta(days=7)),
    )
    reports = Reports()
    service = build_scheduler(core, reports)
    clock.moment = snap.created_at + timedelta(hours=23)
    await service.check_holds()
    assert reports.reminders == []
    clock.moment = snap.created_at + timedelta(hours=25)
    await service.check_holds()
    await service.check_holds()
    assert [s.label for s in reports.reminders] == ["pre-change"], "once per 24 h"
    clock.moment = snap.created_at + timedelta(days=8)
    await service.check_holds()
    held = {s.label: s.hold for s in await services.catalogue.snapshots()}
    assert held["keep-a-week"] is None
    assert held["pre-change"] is not None
    assert len(reports.reminders) == 2


async def _no_progress(stage: object) -> None:
    return None


async def test_the_daily_digest_lists_every_vm_and_flags_stale_ones(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    (snap,) = await services.catalogue.snapshots()
    await services.catalogue.add_schedule(nightly())
    core = replace(core, settings=replace(core.settings, digest_channel="C_DIGEST"))
    reports = Reports()
    service = build_scheduler(core, reports)
    clock.moment = snap.created_at + timedelta(days=2)
    await service.send_digest()
    (digest,) = reports.digests
    assert digest.channel == "C_DIGEST"
    text = messages.digest_text(digest)
    assert "web-01: 1 snapshot(s), newest 2.0 days ago" in text
    assert "warning: getting old" in text, "a daily schedule promised a day; 2 days is stale"
    assert "web-02: 0 snapshot(s), no snapshot" in text
    assert "CRITICAL" in text
    assert "db-01" in text
    assert "Schedule nightly: last run not yet" in text


async def test_runs_left_running_by_a_dead_leader_are_marked_interrupted(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, _ = clocked
    schedule = await services.catalogue.add_schedule(nightly())
    await services.catalogue.begin_run(schedule.id, DAY1 + timedelta(hours=2), "deadhost:1:x")
    service = await started(core, Reports())
    try:
        assert await services.catalogue.runs() == [
            (schedule.id, DAY1 + timedelta(hours=2), "interrupted")
        ]
    finally:
        await service.stop()


async def test_an_undeliverable_report_does_not_stop_other_schedules(
    clocked: tuple[Core, FakeClock], services: Services
) -> None:
    core, clock = clocked

    class Flaky(Reports):
        async def run_report(self, report: RunReport) -> None:
            if report.schedule.name == "first":
                raise RuntimeError("channel_not_found")
            await super().run_report(report)

    await services.catalogue.add_schedule(nightly(name="first", vms="web-01"))
    await services.catalogue.add_schedule(nightly(name="second", vms="web-02"))
    reports = Flaky()
    service = await started(core, reports)
    try:
        clock.moment = DAY1 + timedelta(hours=2, seconds=1)
        ran = await service.tick()
        assert [r.schedule.name for r in ran] == ["first", "second"]
        assert [r.schedule.name for r in reports.runs] == ["second"]
        # the first schedule's mark moved on: its slot is not run again
        assert await service.tick() == []
    finally:
        await service.stop()
