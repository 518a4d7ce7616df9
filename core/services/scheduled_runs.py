"""One run of a schedule: snapshot every VM it covers, prune by its policy, measure, report.

A VM that is busy (a restore is running) is skipped with the reason; a VM whose snapshot failed
is not pruned (its old snapshots are the fallback); one VM's failure never stops the others.
Hosts run in parallel, and each host's VMs run as many at once as its operation limit allows
(``schedule_width``); the report keeps the listing's order.
A schedule's policy that sets no safety-snapshot rule of its own uses the configured one, as it
is when the run happens.
The slot is claimed in the database first, so a slot runs once whatever the number of bot
processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from core.domain.drills import DRILL_EVERY_DAYS, DrillFailed
from core.domain.hosts import HostHealth, covers_host, qualified, several, unreachable
from core.domain.operation import SCHEDULER_VIA, Actor
from core.domain.retention import DEFAULT_SAFETY_KEEP_DAYS, DEFAULT_SAFETY_KEEP_LAST
from core.domain.schedule import Schedule, ScheduleTask
from core.domain.snapshot import CatalogueStatus, Origin, SnapshotKind
from core.domain.vm import Vm
from core.errors import CoreError, HypervisorError, HypervisorUnavailable, InvalidInput
from core.ports import Clock, RunStore
from core.services.backups import BackupService
from core.services.drills import DrillService
from core.services.pruning import PruneService
from core.services.reports import Digest, DigestLine, Freshness, RunReport, VmOutcome
from core.services.snapshots import SnapshotService

logger = logging.getLogger(__name__)


class ScheduleRunner:
    def __init__(
        self,
        snapshots: SnapshotService,
        pruning: PruneService,
        store: RunStore,
        clock: Clock,
        owner: str,
        *,
        safety_keep: tuple[int, int] = (DEFAULT_SAFETY_KEEP_LAST, DEFAULT_SAFETY_KEEP_DAYS),
        backups: BackupService | None = None,
        drills: DrillService | None = None,
        hosts: Callable[[], Sequence[HostHealth]] | None = None,
    ) -> None:
        self._snapshots = snapshots
        # Each configured host and whether it answers (reports group by host and name those
        # that are down, where there are several).
        self._hosts = hosts
        self._backups = backups
        self._drills = drills
        self._pruning = pruning
        self._store = store
        self._clock = clock
        self._owner = owner
        self._safety_keep = safety_keep  # (newest kept, days kept): Settings.safety_keep_*

    def _health(self) -> Sequence[HostHealth]:
        return () if self._hosts is None else self._hosts()

    def actor(self, schedule: Schedule) -> Actor:
        return Actor(user=f"schedule:{schedule.name}", via=SCHEDULER_VIA, channel=schedule.channel)

    async def run(
        self,
        schedule: Schedule,
        fire_time: datetime,
        *,
        catch_up: bool = False,
        missed: tuple[datetime, ...] = (),
    ) -> RunReport | None:
        """Run the slot ``fire_time``; None when another run (any process) has claimed it."""
        run_id = await self._store.begin_run(schedule.id, fire_time, self._owner)
        if run_id is None:
            logger.info("slot %s of %s is taken", fire_time, schedule.name)
            return None
        started = time.monotonic()
        report = RunReport(schedule, fire_time, catch_up, missed)
        fleet = several(self._health())
        report.hosts = tuple(h.name for h in fleet)
        try:
            try:
                listed = await self._snapshots.list_vms()
            except HypervisorUnavailable:
                if not fleet:
                    raise
                listed = []  # no host answers: the report names each
            vms = [v for v in listed if covers(schedule, v.vm)]
            report.no_vms = not vms
            if schedule.task is ScheduleTask.DRILL and self._drills is not None:
                # Only those without a passing drill lately, one after the other.
                names = [s.vm.name for s in vms]
                due = set(await self._drills.due(names, days=DRILL_EVERY_DAYS))
                vms = [s for s in vms if s.vm.name in due]
            await self._work(schedule, fire_time, report, [s.vm for s in vms])
            # A host down from the start, or lost during the run, is named in the report.
            report.unreachable = [
                h
                for h in unreachable(self._health())
                if h.name in report.hosts and covers_host(schedule.vms, h.name)
            ]
            report.no_vms = report.no_vms and not report.unreachable
            await self._measure(schedule, report)
        finally:
            report.seconds = time.monotonic() - started
            await self._store.finish_run(run_id, report.status, report.summary())
        return report

    async def _work(
        self, schedule: Schedule, fire_time: datetime, report: RunReport, vms: list[Vm]
    ) -> None:
        """Each VM's work: the hosts in parallel, and on each host as many VMs at once as
        that host's ``max_operations`` (``schedule_width``). A run lasts about as long as its
        slowest host, each host's share about the sum of its operations over its limit, and
        a host that is slow or goes away holds up no other. Drills stay one after the other
        (they share the lab), and so do verifications: they read the backup store, not the
        hosts, so take no host's slot, and two at once could both set aside the same damaged
        chunk the VMs share.

        Outcomes keep the listing's order (by name, then host) whatever order the VMs finish
        in, so reports read the same from one run to the next; those finished before the run
        is cancelled (the scheduler stopping) are reported, and an operation cancelled midway
        stays RUNNING for the reconciler, as any cancelled operation does. One VM's failure is
        its outcome and stops no other; an unforeseen error (a bug) lets the VMs already
        started finish, starts no other, and is raised."""
        if schedule.task in (ScheduleTask.DRILL, ScheduleTask.VERIFY):
            for vm in vms:
                report.outcomes.append(await self._one_vm_on(schedule, fire_time, vm))
            return
        per_host: dict[str | None, list[Vm]] = {}
        for vm in vms:
            per_host.setdefault(vm.host, []).append(vm)
        limits = {h.name: h.max_operations for h in self._health()}
        done: dict[str, VmOutcome] = {}
        broken: list[Exception] = []

        async def worker(queue: Iterator[Vm]) -> None:
            # The host's workers share its queue: each takes the next VM not yet started.
            for vm in queue:
                if broken:
                    return
                try:
                    done[vm.uuid] = await self._one_vm_on(schedule, fire_time, vm)
                except Exception as exc:
                    broken.append(exc)
                    raise

        workers = []
        for host, host_vms in per_host.items():
            queue = iter(host_vms)
            limit = None if host is None else limits.get(host)
            workers += [worker(queue) for _ in range(min(schedule_width(limit), len(host_vms)))]
        try:
            # Waits for every worker, also when cancelled: no operation outlives the run.
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            report.outcomes.extend(done[vm.uuid] for vm in vms if vm.uuid in done)
        if broken:
            raise broken[0]

    async def _one_vm_on(self, schedule: Schedule, fire_time: datetime, vm: Vm) -> VmOutcome:
        outcome = await self._one_vm(schedule, fire_time, qualified(vm.host, vm.name))
        outcome.host = vm.host
        return outcome

    async def _one_vm(self, schedule: Schedule, fire_time: datetime, vm: str) -> VmOutcome:
        if schedule.task is ScheduleTask.DRILL:
            return await self._drill(schedule, vm)
        label = schedule.snapshot_label(fire_time)
        outcome = VmOutcome(vm, None if schedule.task is ScheduleTask.VERIFY else label)
        started = time.monotonic()
        try:
            if schedule.task is ScheduleTask.VERIFY:
                outcome.verify = await self._need_backups().verify(
                    vm, None, actor=self.actor(schedule)
                )
                outcome.seconds = time.monotonic() - started
                return outcome
            if schedule.task is ScheduleTask.INCREMENTAL:
                outcome.backup = await self._need_backups().create_backup(
                    vm,
                    label,
                    actor=self.actor(schedule),
                    description=f"scheduled by {schedule.name}",
                    origin=Origin.SCHEDULED,
                )
                vm_uuid, vm_state = outcome.backup.snapshot.vm_uuid, outcome.backup.vm_state
            else:
                created = await self._snapshots.create_snapshot(
                    vm,
                    label,
                    actor=self.actor(schedule),
                    description=f"scheduled by {schedule.name}",
                    origin=Origin.SCHEDULED,
                )
                outcome.memory_bytes = created.snapshot.memory_bytes
                vm_uuid, vm_state = created.snapshot.vm_uuid, created.vm_state
        except CoreError as exc:
            outcome.error = exc
            outcome.skipped = not isinstance(exc, HypervisorError)
            outcome.vm_state = getattr(exc, "vm_state", None)
            outcome.seconds = time.monotonic() - started
            logger.warning(
                "scheduled %s of %s by %s: %s", schedule.task.value, vm, schedule.name, exc
            )
            return outcome
        outcome.seconds = time.monotonic() - started
        outcome.vm_state = vm_state.value
        if schedule.policy is not None:
            # Only after a good new snapshot: when it failed, old points are the fallback.
            policy = schedule.policy.with_safety_defaults(*self._safety_keep)
            kinds = (
                frozenset({SnapshotKind.INCREMENTAL})
                if schedule.task is ScheduleTask.INCREMENTAL
                else frozenset({SnapshotKind.FULL})
            )
            try:
                preview = await self._pruning.preview(vm, policy, kinds=kinds)
                outcome.prune_reasons = {
                    d.snapshot.label: d.reason
                    for plan in preview.plans
                    for d in plan.decisions
                    if not d.keep
                }
                (outcome.prune,) = await self._pruning.apply(
                    preview.to_delete or {vm_uuid: []},
                    policy,
                    actor=self.actor(schedule),
                    kinds=kinds,
                    archive=schedule.archive,
                )
            except CoreError as exc:
                outcome.prune_error = exc
                logger.warning("scheduled prune of %s by %s: %s", vm, schedule.name, exc)
        return outcome

    async def _drill(self, schedule: Schedule, vm: str) -> VmOutcome:
        """A restore drill of the VM's newest restore point; a failed drill fails the run."""
        outcome = VmOutcome(vm, None)
        started = time.monotonic()
        try:
            if self._drills is None:
                raise InvalidInput(
                    "this schedule runs restore drills, and this snapbot cannot: they need a "
                    "backup store (SNAPBOT_BACKUP_DIR) on the VMs' host"
                )
            outcome.drill = await self._drills.run(vm, actor=self.actor(schedule))
        except CoreError as exc:
            outcome.error = exc
            outcome.skipped = not isinstance(exc, HypervisorError)
            logger.warning("scheduled drill of %s by %s: %s", vm, schedule.name, exc)
        else:
            if not outcome.drill.passed:
                outcome.error = DrillFailed(outcome.drill.drill.error or "the drill failed")
        outcome.seconds = time.monotonic() - started
        return outcome

    def _need_backups(self) -> BackupService:
        if self._backups is None:
            raise InvalidInput(
                "this schedule uses the backup store, and none is configured: set "
                "SNAPBOT_BACKUP_DIR to its directory"
            )
        return self._backups

    async def _measure(self, schedule: Schedule, report: RunReport) -> None:
        """Storage totals, free space, and VMs whose newest snapshot is older than promised."""
        warn, critical = schedule.freshness_limits
        now = self._clock.now()
        for group in await self._snapshots.list_snapshots():
            if group.vm is None or not covers(schedule, group.vm):
                continue
            name = qualified(group.vm.host, group.vm_name)
            report.disk_bytes += group.disk_bytes or 0
            host = group.vm.host
            if report.hosts and host is not None:
                report.disk_by_host[host] = report.disk_by_host.get(host, 0) + (
                    group.disk_bytes or 0
                )
            # One reading per host where there are several (each has its own disks).
            if (report.free if not report.hosts else report.free_by_host.get(host or "")) is None:
                try:
                    _, free = await self._snapshots.storage(group.vm)
                except CoreError as exc:
                    logger.info("free space of %s unknown: %s", name, exc)
                else:
                    report.free = report.free or free
                    if report.hosts and host is not None and free is not None:
                        report.free_by_host[host] = free
            present = [s for s in group.snapshots if s.status is CatalogueStatus.PRESENT]
            newest = max((s.created_at for s in present), default=None)
            age = None if newest is None else now - newest
            if age is None or age > warn:
                report.stale.append(Freshness(name, age, age is None or age > critical))

    async def digest(self, channel: str, now: datetime) -> Digest:
        """The daily overview: every VM's snapshots, freshness and holds, each schedule's
        latest run."""
        latest: dict[int, str] = {}
        for schedule_id, _fire, status in await self._store.runs():
            latest[schedule_id] = status  # runs come oldest first: the last one wins
        return await build_digest(
            self._snapshots,
            await self._store.schedules(),
            latest,
            now,
            channel,
            unreachable=tuple(h for h in unreachable(self._health()) if several(self._health())),
        )


def schedule_width(limit: int | None) -> int:
    """How many of one host's VMs a schedule works on at once, given the host's
    ``max_operations`` (None: the host sets no limit).

    Every slot of the host, not one fewer: a person's request (a ``/snapshot``, a restore)
    that finds them all taken waits only until the first of the schedule's operations ends,
    seconds, not the run: ``Fleet.slot``'s semaphore hands a freed slot to whoever has
    waited longest, and the schedule's next operation asks after the person did. Keeping
    one slot back would leave the default limit of 2 running one VM at a time, the very
    thing the limit is meant to allow. Never more than the limit: the schedule has at most
    that many VMs in progress on the host, each with one operation at a time, so when its
    operations hold every slot none of them is waiting; one waits only behind people's
    operations, as a lone scheduled snapshot did before (one waiting longer than
    ``slot_wait`` is refused as busy, and the schedule never brings that on itself).

    A host without a limit (``LIBVIRT_URI`` alone: its operations take no slot) gets one
    VM at a time, as nothing says how much more it can take; ``[[hosts]]`` with
    ``max_operations`` sets it."""
    return 1 if limit is None else max(1, limit)


def covers(schedule: Schedule, vm: Vm) -> bool:
    """Whether the schedule's VMs (``all``, a name or glob, or ``hv1/web-*`` with its host)
    include ``vm``."""
    return schedule.covers(vm.name) or (
        vm.host is not None and schedule.covers(qualified(vm.host, vm.name))
    )


async def build_digest(
    snapshots: SnapshotService,
    schedules: list[Schedule],
    latest_status: dict[int, str],
    now: datetime,
    channel: str,
    *,
    unreachable: tuple[HostHealth, ...] = (),
) -> Digest:
    lines = []
    free = None
    for group in await snapshots.list_snapshots():
        if group.vm is None:
            continue
        name = qualified(group.vm.host, group.vm_name)
        present = [s for s in group.snapshots if s.status is CatalogueStatus.PRESENT]
        newest = max((s.created_at for s in present), default=None)
        age = None if newest is None else now - newest
        stale = None
        for schedule in schedules:
            if covers(schedule, group.vm):
                warn, critical = schedule.freshness_limits
                if age is None or age > warn:
                    stale = Freshness(name, age, age is None or age > critical)
        if free is None:
            try:
                _, free = await snapshots.storage(group.vm)
            except CoreError:
                free = None
        lines.append(
            DigestLine(
                name,
                len(present),
                sum(1 for s in present if s.hold is not None),
                age,
                group.disk_bytes,
                stale,
            )
        )
    return Digest(
        channel,
        tuple(lines),
        tuple((s, latest_status.get(s.id)) for s in schedules),
        free,
        unreachable,
    )
