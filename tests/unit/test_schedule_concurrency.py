"""A schedule works on each host's VMs as many at once as the host's ``max_operations`` allows,
never more, and reports them in the listing's order whatever order they finish in."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import messages
from bot.mrkdwn import plain
from core.bootstrap import Core
from core.catalogue.models import ScheduleRunRow
from core.catalogue.store import TortoiseCatalogue
from core.domain.hosts import HostConfig
from core.domain.operation import OperationStatus
from core.domain.retention import RetentionPolicy
from core.domain.schedule import Schedule, parse_when
from core.domain.snapshot import HypervisorSnapshot
from core.domain.vm import Vm, VmState
from core.errors import OperationFailed
from core.services.scheduled_runs import schedule_width
from tests.conftest import ALICE, Services
from tests.fakes.hypervisor import FakeHypervisor
from tests.unit.test_hosts import fleet_core

FIRE = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def vms(prefix: str, count: int, first: int = 1) -> list[Vm]:
    return [
        Vm(str(uuid.UUID(int=first + n)), f"{prefix}-{n:02d}", VmState.RUNNING, 256 * 2**20)
        for n in range(count)
    ]


class GatedHost(FakeHypervisor):
    """A fake host whose snapshots wait at a gate per VM until the test lets them through,
    counting how many are being taken at once."""

    def __init__(self, name: str, machines: list[Vm], host_uuid: str) -> None:
        super().__init__(*machines, host_uuid=host_uuid, uri=f"qemu+ssh://root@{name}/system")
        self.inside: list[str] = []
        self.peak = 0
        self.started: list[str] = []
        self.finished: list[str] = []
        self.failing: set[str] = set()
        # VMs whose snapshot meets an error no one foresaw (a bug, not a libvirt failure)
        self.bugs: set[str] = set()
        self.delays: dict[str, float] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._all_open = False

    def _gate(self, name: str) -> asyncio.Event:
        if name not in self._gates:
            self._gates[name] = asyncio.Event()
            if self._all_open:
                self._gates[name].set()
        return self._gates[name]

    def let(self, *names: str) -> None:
        for name in names:
            self._gate(name).set()

    def let_all(self) -> None:
        self._all_open = True
        for gate in self._gates.values():
            gate.set()

    async def create_snapshot(
        self, vm: Vm, libvirt_name: str, description: str
    ) -> HypervisorSnapshot:
        self.started.append(vm.name)
        self.inside.append(vm.name)
        self.peak = max(self.peak, len(self.inside))
        try:
            await self._gate(vm.name).wait()
            await asyncio.sleep(self.delays.get(vm.name, 0.0))
            if vm.name in self.failing:
                raise OperationFailed("No space left on device", vm=vm.name)
            if vm.name in self.bugs:
                raise RuntimeError("a bug")
            return await super().create_snapshot(vm, libvirt_name, description)
        finally:
            self.inside.remove(vm.name)
            self.finished.append(vm.name)


async def one_host(
    tmp_path: Path, catalogue: TortoiseCatalogue, machines: list[Vm], limit: int
) -> tuple[Core, GatedHost]:
    hv = GatedHost("hv1", machines, "aaaaaaaa-0000-4000-8000-000000000001")
    core = fleet_core(tmp_path, catalogue, [(HostConfig("hv1", hv.uri, limit), hv)])
    assert await core.watch.connect_once()
    return core, hv


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def nightly(core: Core, vms: str = "*", policy: RetentionPolicy | None = None) -> Schedule:
    return await core.schedules.add(
        "nightly", vms, parse_when(["daily", "02:00"], "UTC"), policy, "C_OPS", ALICE
    )


def flat(text: str) -> str:
    return plain(text).replace("*", "").replace("`", "")


def test_a_schedule_takes_every_slot_of_a_host_and_one_at_a_time_where_none_is_set() -> None:
    assert [schedule_width(n) for n in (1, 2, 5)] == [1, 2, 5]
    assert schedule_width(None) == 1


async def test_each_host_runs_as_many_vms_as_its_limit_and_never_more(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1 = GatedHost("hv1", vms("web", 7), "aaaaaaaa-0000-4000-8000-000000000001")
    hv2 = GatedHost("hv2", vms("app", 3, first=100), "bbbbbbbb-0000-4000-8000-000000000002")
    # A short wait for a slot: had the schedule queued more operations than its host has
    # slots, those would be refused as busy while the gates are shut.
    core = fleet_core(
        tmp_path,
        catalogue,
        [(HostConfig("hv1", hv1.uri, 3), hv1), (HostConfig("hv2", hv2.uri, 1), hv2)],
        slot_wait=0.3,
    )
    assert await core.watch.connect_once()
    run = asyncio.create_task(core.runs.run(await nightly(core), FIRE))
    await until(lambda: len(hv1.inside) == 3 and len(hv2.inside) == 1)
    await asyncio.sleep(0.6)  # twice the slot wait: nothing more starts, nothing is refused
    assert hv1.inside == ["web-00", "web-01", "web-02"]
    assert hv2.inside == ["app-00"]
    assert [h.operations for h in core.watch.health()] == [3, 1]
    hv1.let_all()
    hv2.let_all()
    report = await run
    assert report is not None
    assert (hv1.peak, hv2.peak) == (3, 1)
    assert report.status == "succeeded"
    assert all(o.ok for o in report.outcomes), [o.error for o in report.outcomes]
    assert [o.vm for o in report.outcomes] == [f"hv2/app-{n:02d}" for n in range(3)] + [
        f"hv1/web-{n:02d}" for n in range(7)
    ]
    assert [h.operations for h in core.watch.health()] == [0, 0]


async def test_a_host_without_a_limit_gets_one_vm_at_a_time(core: Core, services: Services) -> None:
    inside: list[int] = [0, 0]  # now, most

    async def counting() -> None:
        inside[0] += 1
        inside[1] = max(inside[1], inside[0])
        await asyncio.sleep(0.05)
        inside[0] -= 1

    services.hv.after_create = counting
    report = await core.runs.run(await nightly(core), FIRE)
    assert report is not None
    assert [o.vm for o in report.outcomes] == ["db-01", "web-01", "web-02"]
    assert all(o.ok for o in report.outcomes)
    assert inside[1] == 1


async def test_the_report_keeps_name_order_and_one_failure_stops_no_other(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    core, hv = await one_host(tmp_path, catalogue, vms("vm", 6), limit=3)
    hv.let_all()
    schedule = await nightly(core, policy=RetentionPolicy(keep_last=1))
    first = await core.runs.run(schedule, FIRE)
    assert first is not None
    assert first.status == "succeeded"
    # The second night: the first VMs are the slowest, so they finish last; vm-03 fails.
    hv.finished.clear()
    hv.delays = {f"vm-{n:02d}": (6 - n) * 0.05 for n in range(6)}
    hv.failing = {"vm-03"}
    report = await core.runs.run(schedule, FIRE + timedelta(days=1))
    assert report is not None
    assert hv.peak == 3
    assert hv.finished != sorted(hv.finished)  # they did finish out of order
    names = [f"vm-{n:02d}" for n in range(6)]
    typed = [f"hv1/{n}" for n in names]  # as the report names them
    assert [o.vm for o in report.outcomes] == typed
    failed = {o.vm for o in report.outcomes if not o.ok}
    assert failed == {"hv1/vm-03"}
    assert report.status == "failed"
    # every other VM got its snapshot and had the first night's pruned, each its own
    for o in report.outcomes:
        if o.vm == "hv1/vm-03":
            assert o.prune is None
        else:
            assert o.prune is not None
            assert [d.snapshot.label for d in o.prune.deleted] == ["nightly-20261126-0200"]
    # the failed VM keeps its old snapshot as the fallback
    by_name = {f.vm.name: f for f in hv.vms.values()}
    assert len(by_name["vm-03"].snapshots) == 1
    assert all(len(by_name[n].snapshots) == 1 for n in names)
    assert list(report.summary()["vms"]) == typed  # type: ignore[call-overload]
    text = flat(messages.run_report(report))
    positions = [text.index(f"{n}:") for n in typed]
    assert positions == sorted(positions)
    digest = await core.runs.digest("C_OPS", FIRE + timedelta(days=1))
    assert [line.vm for line in digest.lines] == typed


async def test_a_persons_request_takes_the_next_free_slot_before_the_schedules_next_vm(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    core, hv = await one_host(tmp_path, catalogue, [*vms("vm", 4), *vms("db", 1, 50)], limit=2)
    run = asyncio.create_task(core.runs.run(await nightly(core, "vm-*"), FIRE))
    await until(lambda: hv.inside == ["vm-00", "vm-01"])
    person = asyncio.create_task(core.snapshots.create_snapshot("db-00", "mine", actor=ALICE))
    await asyncio.sleep(0.2)  # the person now waits for one of the two slots
    assert hv.started == ["vm-00", "vm-01"]
    hv.let("vm-00")
    await until(lambda: len(hv.started) == 3)
    await asyncio.sleep(0.1)
    assert hv.started == ["vm-00", "vm-01", "db-00"]
    hv.let("db-00")
    created = await person
    assert created.snapshot.label == "mine"
    hv.let_all()
    report = await run
    assert report is not None
    assert report.status == "succeeded"
    assert hv.started[3:] == ["vm-02", "vm-03"]


async def test_a_cancelled_run_records_what_finished_and_leaves_the_rest_to_recovery(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    core, hv = await one_host(tmp_path, catalogue, vms("vm", 4), limit=2)
    schedule = await nightly(core)
    hv.let("vm-00")
    run = asyncio.create_task(core.runs.run(schedule, FIRE))
    await until(lambda: hv.inside == ["vm-01", "vm-02"])
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    # the run's record is finished, with the VM that was done
    row = await ScheduleRunRow.get(schedule_id=schedule.id)
    assert row.finished_at is not None
    assert row.status == "succeeded"
    assert list(row.report["vms"]) == ["hv1/vm-00"]  # type: ignore[call-overload]
    # the two cancelled midway stay RUNNING for the reconciler; the fourth never started
    running = sorted(r.operation.vm_name for r in await catalogue.running_operations())
    assert running == ["vm-01", "vm-02"]
    assert "vm-03" not in hv.started
    done = await catalogue.operations(vms("vm", 1)[0].uuid)
    assert [op.status for op in done] == [OperationStatus.SUCCEEDED]


async def test_an_unforeseen_error_lets_the_started_vms_finish_and_starts_no_other(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    core, hv = await one_host(tmp_path, catalogue, vms("vm", 4), limit=2)
    schedule = await nightly(core)
    hv.bugs = {"vm-00"}
    hv.let("vm-00")
    run = asyncio.create_task(core.runs.run(schedule, FIRE))
    await until(lambda: "vm-00" in hv.finished)
    await asyncio.sleep(0.1)
    assert hv.inside == ["vm-01"]  # still being taken, and nothing new started
    hv.let_all()
    with pytest.raises(RuntimeError, match="a bug"):
        await run
    assert hv.started == ["vm-00", "vm-01"]
    row = await ScheduleRunRow.get(schedule_id=schedule.id)
    assert row.finished_at is not None
    assert list(row.report["vms"]) == ["hv1/vm-01"]  # type: ignore[call-overload]
    assert await catalogue.running_operations() == []
