"""Holds: only the snapshot's creator or an admin may place or release one, every attempt is
audited, a hold takes the VM's lock, and a hold placed while a prune runs wins over it."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from bot import messages
from bot.console import Console, ConsoleReporter
from bot.dispatch import ConfirmDelete, ConfirmPrune, Dispatcher
from bot.grammar import DeleteSnapshot, Prune
from core.bootstrap import Core
from core.domain.access import Action
from core.domain.operation import Actor, Operation, OperationKind, OperationStatus
from core.domain.retention import RetentionPolicy
from core.domain.schedule import parse_when
from core.domain.snapshot import HoldKind, HypervisorSnapshot, Origin
from core.domain.vm import Vm
from core.errors import HoldForbidden, LockHolder, SnapshotHeld, VmBusy
from core.services.schedules import HOLD_EXPIRY_ACTOR
from scheduler.service import build_scheduler
from tests.conftest import ALICE, BOB, Services
from tests.fakes.hypervisor import FakeHypervisor
from tests.reliability.figures import record

ADMIN = Actor(user="U_ADMIN", via="test", team="T1", channel="C1")


class Admins:
    """An authority in which only ``U_ADMIN`` is an admin (may delete snapshots)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Action, str | None]] = []

    async def allows(self, actor: Actor, action: Action, vm: str | None) -> bool:
        self.asked.append((actor.user, action, vm))
        return actor.user == ADMIN.user and action is Action.DELETE


async def console(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    scheduler = build_scheduler(core, ConsoleReporter(out))
    status = await Console(core, io.StringIO(script), out, scheduler).run()
    return status, out.getvalue()


async def audit(services: Services, kind: OperationKind) -> list[Operation]:
    """Operations of ``kind``, oldest first."""
    ops = await services.catalogue.operations(limit=500)
    return sorted((op for op in ops if op.kind is kind), key=lambda op: op.started_at)


async def hold_of(services: Services, label: str) -> HoldKind | None:
    (snap,) = [s for s in await services.catalogue.snapshots() if s.label == label]
    return snap.hold.kind if snap.hold else None


async def test_only_the_creator_or_an_admin_may_place_or_release_a_hold(
    core: Core, services: Services
) -> None:
    await core.snapshots.create_snapshot("web-01", "pre-change", actor=ALICE)
    admins = Admins()

    with pytest.raises(HoldForbidden) as refused:
        await core.holds.hold("web-01", "pre-change", HoldKind.INDEFINITE, None, BOB, admins)
    assert await hold_of(services, "pre-change") is None
    text = messages.error_text(refused.value)
    assert "Only the snapshot's creator (U_ALICE) or an admin may hold `pre-change`" in text

    held = await core.holds.hold("web-01", "pre-change", HoldKind.VERIFIED, None, ALICE, admins)
    assert held.hold is not None
    with pytest.raises(HoldForbidden, match="release the hold on pre-change"):
        await core.holds.release("web-01", "pre-change", BOB, admins)
    assert await hold_of(services, "pre-change") is HoldKind.VERIFIED

    released = await core.holds.release("web-01", "pre-change", ADMIN, admins)
    assert released.hold is None
    assert ("U_ADMIN", Action.DELETE, "web-01") in admins.asked

    holds = await audit(services, OperationKind.HOLD)
    assert [(op.requested_by, op.status) for op in holds] == [
        ("U_BOB", OperationStatus.REJECTED),
        ("U_ALICE", OperationStatus.SUCCEEDED),
    ]
    assert "U_BOB may not hold pre-change" in (holds[0].error or "")
    assert holds[1].libvirt_name == held.libvirt_name
    assert holds[1].finished_at is not None
    releases = await audit(services, OperationKind.RELEASE)
    assert [(op.requested_by, op.status) for op in releases] == [
        ("U_BOB", OperationStatus.REJECTED),
        ("U_ADMIN", OperationStatus.SUCCEEDED),
    ]


async def test_the_console_is_the_local_operator_and_its_holds_are_audited(
    core: Core, services: Services
) -> None:
    # Whoever runs the console can use virsh on the host: it acts as an admin, and is recorded.
    await core.snapshots.create_snapshot("web-01", "alices", actor=ALICE)
    status, out = await console(
        core, "/snapshot hold web-01 alices\n/snapshot release web-01 alices\n"
    )
    assert status == 0, out
    assert "is now held" in out
    assert "is no longer held" in out
    ((hold,), (release,)) = (
        await audit(services, OperationKind.HOLD),
        await audit(services, OperationKind.RELEASE),
    )
    assert hold.requested_by.startswith("console:")
    assert hold.via == release.via == "console"
    assert hold.status is release.status is OperationStatus.SUCCEEDED


async def test_a_hold_on_a_busy_vm_is_refused_as_busy(core: Core, services: Services) -> None:
    await core.snapshots.create_snapshot("web-01", "base", actor=ALICE)
    # The next snapshot of web-01 stops inside libvirt until released: it holds the lock.
    inside, finish = asyncio.Event(), asyncio.Event()
    create = services.hv.create_snapshot

    async def blocked_create(vm: Vm, name: str, description: str) -> HypervisorSnapshot:
        inside.set()
        await finish.wait()
        return await create(vm, name, description)

    services.hv.create_snapshot = blocked_create  # type: ignore[method-assign,assignment]
    slow = asyncio.create_task(core.snapshots.create_snapshot("web-01", "slow", actor=BOB))
    await asyncio.wait_for(inside.wait(), 5)

    with pytest.raises(VmBusy) as busy:
        await core.holds.hold("web-01", "base", HoldKind.INDEFINITE, None, ALICE)
    assert "web-01 is busy: snapshot by U_BOB" in messages.error_text(busy.value)
    with pytest.raises(VmBusy):
        await core.holds.release("web-01", "base", ALICE)
    finish.set()
    await slow
    assert await hold_of(services, "base") is None
    (refused,) = await audit(services, OperationKind.HOLD)
    assert refused.status is OperationStatus.REJECTED

    await core.holds.hold("web-01", "base", HoldKind.INDEFINITE, None, ALICE)
    assert await hold_of(services, "base") is HoldKind.INDEFINITE


def hold_between_plan_and_delete(
    hv: FakeHypervisor, place_hold: Callable[[], Awaitable[object]], *, before_delete: int = 0
) -> list[str]:
    """Run ``place_hold`` once a prune has made its fresh plan, right before its deletion
    number ``before_delete`` (0: the first) takes the VM's lock.

    A prune looks its VM up by uuid, re-plans, then each deletion looks the VM up by name and
    only then takes the lock: the hold lands in that gap, as a person's would."""
    by_uuid, by_name = hv.get_vm_by_uuid, hv.get_vm
    events: list[str] = []

    async def get_vm_by_uuid(uuid: str) -> Vm:
        events.append("planned")
        return await by_uuid(uuid)

    async def get_vm(name: str) -> Vm:
        if "planned" in events and "fired" not in events:
            if events.count("delete") == before_delete:
                events.append("fired")
                await place_hold()
            else:
                events.append("delete")
        return await by_name(name)

    hv.get_vm_by_uuid = get_vm_by_uuid  # type: ignore[method-assign]
    hv.get_vm = get_vm  # type: ignore[method-assign]
    return events


async def take_scheduled(services: Services, vm: str, count: int) -> None:
    for n in range(count):
        services.hv._clock += 86_400
        await services.service.create_snapshot(
            vm, f"daily-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )


async def test_a_hold_placed_during_a_confirmed_prune_wins(core: Core, services: Services) -> None:
    await take_scheduled(services, "web-01", 4)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(Prune("web-01", (("last", 1),), False), ALICE)
    assert isinstance(request, ConfirmPrune)
    assert request.confirmation is not None
    (plan,) = request.preview.plans
    assert [s.label for s in plan.to_delete] == ["daily-2", "daily-1", "daily-0"]

    # Held by its creator after the confirm re-planned: the plan still deletes it.
    fired = hold_between_plan_and_delete(
        services.hv,
        lambda: core.holds.hold("web-01", "daily-1", HoldKind.INDEFINITE, None, ALICE),
    )
    text = await dispatcher.confirm(request.confirmation.id, ALICE)
    assert fired.count("fired") == 1

    assert sorted(s.label for s in await services.catalogue.snapshots()) == [
        "daily-1",
        "daily-3",
    ]
    assert "deleted 2" in text
    assert "kept `daily-1`: held after the plan was made (held, hold placed by U_ALICE)" in text
    refused = [
        op
        for op in await audit(services, OperationKind.DELETE)
        if op.status is OperationStatus.REJECTED
    ]
    assert [op.snapshot_label for op in refused] == ["daily-1"]


async def test_a_hold_placed_during_a_scheduled_prune_wins(core: Core, services: Services) -> None:
    await take_scheduled(services, "web-01", 3)
    schedule = await core.schedules.add(
        "nightly",
        "web-01",
        parse_when(["daily", "02:00"], "UTC"),
        RetentionPolicy.from_counts(last=1),
        "C_OPS",
        ALICE,
    )
    hold_between_plan_and_delete(
        services.hv,
        lambda: core.holds.hold("web-01", "daily-0", HoldKind.VERIFIED, None, ALICE),
    )
    out = io.StringIO()
    report = await build_scheduler(core, ConsoleReporter(out)).run_now(schedule)
    assert report is not None
    (outcome,) = report.outcomes
    assert outcome.prune is not None
    assert [d.snapshot.label for d in outcome.prune.deleted] == ["daily-2", "daily-1"]
    assert [h.label for h in outcome.prune.held] == ["daily-0"]
    text = messages.run_report(report)
    assert "kept `daily-0`: held after the plan was made (held until verified" in text
    assert report.summary()["vms"]["web-01"]["held_since_plan"] == ["daily-0"]  # type: ignore[index]
    labels = {s.label for s in await services.catalogue.snapshots()}
    assert "daily-0" in labels
    assert "daily-1" not in labels


async def test_deleting_a_held_snapshot_says_who_holds_it_and_how_to_release_it(
    core: Core, services: Services
) -> None:
    await core.snapshots.create_snapshot("web-01", "keep-me", actor=ALICE)
    await core.snapshots.create_snapshot("web-01", "other", actor=ALICE)
    dispatcher = Dispatcher(core, access=None)
    # Asked for while free, held before the confirmation: the delete refuses under the lock.
    request = await dispatcher.handle(DeleteSnapshot("web-01", "keep-me"), ALICE)
    assert isinstance(request, ConfirmDelete)
    await core.holds.hold("web-01", "keep-me", HoldKind.INDEFINITE, None, BOB)
    with pytest.raises(SnapshotHeld) as held:
        await dispatcher.confirm(request.confirmation.id, ALICE)
    text = messages.error_text(held.value)
    assert "`keep-me` of web-01 is held (hold placed by U_BOB), so it was not deleted" in text
    assert "`/snapshot release web-01 keep-me`" in text
    (refused,) = await audit(services, OperationKind.DELETE)
    assert refused.status is OperationStatus.REJECTED

    # Asked for while held: refused at once, no confirmation offered.
    with pytest.raises(SnapshotHeld, match="keep-me"):
        await dispatcher.handle(DeleteSnapshot("web-01", "keep-me"), ALICE)
    assert "keep-me" in {s.label for s in await services.catalogue.snapshots()}
    assert not [call for call in services.hv.calls if call[0] == "delete_snapshot"]


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


async def test_an_expired_hold_is_ended_by_the_scheduler_under_the_lock_and_audited(
    core: Core, services: Services
) -> None:
    await core.snapshots.create_snapshot("web-01", "until", actor=ALICE)
    await core.snapshots.create_snapshot("web-01", "changed", actor=ALICE)
    now = core.clock.now()
    for label in ("until", "changed"):
        await core.holds.hold("web-01", label, HoldKind.UNTIL, now + timedelta(seconds=30), ALICE)
    later = now + timedelta(minutes=1)

    # Re-held "until released" after the scheduler listed it: the expiry leaves it alone.
    (listed,) = [s for s in await services.catalogue.snapshots() if s.label == "changed"]
    await core.holds.hold("web-01", "changed", HoldKind.INDEFINITE, None, ALICE)
    assert not await core.holds.expire(listed, later, HOLD_EXPIRY_ACTOR)
    assert await hold_of(services, "changed") is HoldKind.INDEFINITE

    clocked = replace(core, clock=FixedClock(later))
    await build_scheduler(clocked, ConsoleReporter(io.StringIO())).check_holds()
    assert await hold_of(services, "until") is None
    assert await hold_of(services, "changed") is HoldKind.INDEFINITE
    ended = [
        op
        for op in await audit(services, OperationKind.RELEASE)
        if op.status is OperationStatus.SUCCEEDED and op.snapshot_label == "until"
    ]
    assert [op.requested_by for op in ended] == ["scheduler:holds"]
    assert "which has passed; hold ended" in (ended[0].outcome or "")


async def test_a_before_change_snapshot_that_cannot_be_held_says_so(
    core: Core, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone else takes the VM between the snapshot and its hold: the snapshot exists, and
    # the person is told it is not held rather than that it failed.
    async def busy(*args: object, **kwargs: object) -> None:
        raise VmBusy("web-01", LockHolder("restore", "U_BOB", core.clock.now()))

    monkeypatch.setattr(core.holds, "hold", busy)
    status, out = await console(core, "/snapshot web-01 pre-change --hold\n")
    assert status == 0, out
    assert "The snapshot was taken, but it is *not held*: web-01 is busy: restore by U_BOB" in out
    assert "/snapshot hold web-01 pre-change --until-verified" in out
    (snap,) = await services.catalogue.snapshots()
    assert snap.label == "pre-change"
    assert snap.hold is None


async def holds_win_at_every_position(core: Core, services: Services, pinned: int) -> int:
    """For each deletion of a confirmed prune, and each snapshot not yet deleted at that point,
    place a hold on it right before that deletion; return how many of these holds won."""
    dispatcher = Dispatcher(core, access=None)
    vm = "web-01"
    (fake,) = [f for f in services.hv.vms.values() if f.vm.name == vm]
    won = 0
    for position in range(pinned):
        for victim in range(position, pinned):
            # A fresh set each time: the VM's last pinned+1 scheduled snapshots.
            for snap in await services.catalogue.snapshots():
                await services.catalogue.remove_snapshot(snap.vm_uuid, snap.libvirt_name)
            fake.snapshots.clear()
            await take_scheduled(services, vm, pinned + 1)
            request = await dispatcher.handle(Prune(vm, (("last", 1),), False), ALICE)
            assert isinstance(request, ConfirmPrune)
            assert request.confirmation is not None
            (plan,) = request.preview.plans
            order = [s.label for s in plan.to_delete]
            target = order[victim]

            async def place(label: str = target, vm: str = vm) -> None:
                await core.holds.hold(vm, label, HoldKind.INDEFINITE, None, BOB)

            restore = services.hv.get_vm_by_uuid, services.hv.get_vm
            events = hold_between_plan_and_delete(services.hv, place, before_delete=position)
            try:
                text = await dispatcher.confirm(request.confirmation.id, ALICE)
            finally:
                services.hv.get_vm_by_uuid, services.hv.get_vm = restore  # type: ignore[method-assign]
            assert "fired" in events
            left = {s.label for s in await services.catalogue.snapshots()}
            assert left == {f"daily-{pinned}", target}, (position, victim, left)
            assert f"kept `{target}`: held after the plan was made" in text
            assert f"deleted {pinned - 1}" in text
            won += 1
    return won


async def test_a_hold_wins_wherever_it_lands_in_a_prune(core: Core, services: Services) -> None:
    pinned = 3
    won = await holds_win_at_every_position(core, services, pinned)
    assert won == pinned * (pinned + 1) // 2


@pytest.mark.reliability
async def test_a_hold_wins_wherever_it_lands_in_a_long_prune(
    core: Core, services: Services
) -> None:
    pinned = 8
    won = await holds_win_at_every_position(core, services, pinned)
    expected = pinned * (pinned + 1) // 2
    record(
        "Hold during prune",
        f"a hold placed between a confirmed prune's fresh plan and each of its {pinned} "
        "deletions, on every snapshot not yet deleted",
        f"{expected} interleavings, {won} holds won, 0 held snapshots deleted",
        passed=won == expected,
    )
    assert won == expected
