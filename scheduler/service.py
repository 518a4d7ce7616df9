"""The scheduler: apscheduler 3 jobs rebuilt from the database, run by one leader at a time.

The database is the source of truth. Jobs live in apscheduler's memory store and are rebuilt
at start and on every change (no pickled job store that could disagree with it). Each job only
wakes ``tick``, which decides from the stored marks what is due, missed or to catch up, so a
restart, a blocked loop or a missed wake-up all end in the same, reported, state.

Several bot processes may share one database: only the holder of the ``scheduler`` lease runs
schedules; a slot is also claimed by a unique row before it runs, so even two leaders (a lease
lost mid-run) cannot run it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.domain.drills import DRILL_OVERDUE_DAYS
from core.domain.schedule import Schedule, When, parse_when
from core.domain.usage import Forecast, UsageReport
from core.errors import CoreError
from core.ports import Clock, Reporter, SchedulerObserver, ScheduleStore
from core.services.drills import DrillService, DrillStatus
from core.services.facade import Core
from core.services.reports import RunReport
from core.services.scheduled_runs import ScheduleRunner
from core.services.schedules import HoldService
from core.services.usage import UsageService
from scheduler.timing import due, trigger_for

logger = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
# The weekly storage report goes out on this day, at the digest's time.
USAGE_REPORT_DAY = "mon"


@runtime_checkable
class UsageReporter(Protocol):
    """Where storage usage is posted: the weekly report (with its chart, PNG) and the warning
    that a filesystem is forecast to fill soon. A reporter without these gets neither."""

    async def usage_report(
        self, channel: str, report: UsageReport, chart: bytes | None
    ) -> None: ...

    async def fill_warning(
        self, channel: str, forecasts: Sequence[Forecast], today: date
    ) -> None: ...


@runtime_checkable
class DrillReporter(Protocol):
    """Where the weekly flag of VMs without a recent passing restore drill goes."""

    async def drills_overdue(
        self, channel: str, statuses: Sequence[DrillStatus], now: datetime
    ) -> None: ...


class UsageJobs:
    """Once a day: record the usage sample, then warn (at most once that day) about
    filesystems forecast to fill within 14 days. Once a week: the usage report."""

    def __init__(
        self,
        usage: UsageService,
        reporter: UsageReporter | None,
        channel: str | None,
        clock: Clock,
        *,
        drills: DrillService | None = None,
    ) -> None:
        self._usage = usage
        self._drills = drills
        self._reporter = reporter
        self._channel = channel
        self._clock = clock
        # The day a warning last went out. Only the leader runs these jobs; a new leader may
        # repeat a warning the old one sent that day (at most one more).
        self.warned_on: date | None = None

    @property
    def posts(self) -> bool:
        return self._reporter is not None and self._channel is not None

    async def daily(self) -> None:
        try:
            await self._usage.sample_today()
        except CoreError as exc:
            # A day without a sample is a gap in the chart, not a reason to skip the warning.
            logger.warning("usage sample not taken: %s", exc)
        await self.warn_if_filling()

    async def warn_if_filling(self) -> bool:
        """Post the warning unless one went out today; True when it was posted."""
        if self._reporter is None or self._channel is None:
            return False
        today = self._clock.now().date()
        if self.warned_on == today:
            return False
        filling = [f for f in await self._usage.forecasts() if f.soon]
        if not filling:
            return False
        await self._reporter.fill_warning(self._channel, filling, today)
        self.warned_on = today
        return True

    async def weekly(self) -> None:
        if self._reporter is None or self._channel is None:
            return
        report = await self._usage.report(None)
        chart: bytes | None
        try:
            chart = await self._usage.chart(None)
        except CoreError as exc:
            logger.warning("weekly usage chart not drawn: %s", exc)
            chart = None
        await self._reporter.usage_report(self._channel, report, chart)
        if self._drills is not None and isinstance(self._reporter, DrillReporter):
            # The weekly report also names the VMs nobody has shown to restore lately.
            statuses = await self._drills.status(overdue_days=DRILL_OVERDUE_DAYS)
            if any(s.overdue for s in statuses):
                await self._reporter.drills_overdue(self._channel, statuses, self._clock.now())


class SchedulerService:
    """Decides when: wakes at each schedule's times, holds the lease, claims slots. What a run,
    a hold check or the digest does is the services' (``ScheduleRunner``, ``HoldService``)."""

    def __init__(
        self,
        store: ScheduleStore,
        runner: ScheduleRunner,
        holds: HoldService,
        reporter: Reporter,
        clock: Clock,
        owner: str,
        *,
        lease_ttl: timedelta = timedelta(seconds=30),
        digest: tuple[str, When] | None = None,
        observer: SchedulerObserver | None = None,
        usage: UsageJobs | None = None,
        usage_at: tuple[When, When] | None = None,
    ) -> None:
        self._observer = observer
        self.usage = usage
        # (daily sample, weekly report) times of the usage jobs.
        self._usage_at = usage_at
        self._digest = digest  # (channel, when) of the daily overview, if wanted
        self._store = store
        self._holds = holds
        self._runner = runner
        self._reporter = reporter
        self._clock = clock
        self._owner = owner
        self._lease_ttl = lease_ttl
        self._scheduler: AsyncIOScheduler | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.token: int | None = None  # the lease's fencing token while leader

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._scheduler.start()
        await self._campaign()
        self._lease_task = asyncio.create_task(self._keep_lease(), name="scheduler-lease")

    async def stop(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        if self.is_leader:
            await self._store.release_lease(LEASE_NAME, self._owner)
            self.token = None

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl.total_seconds() / 3)
            try:
                await self._campaign()
            except Exception:
                logger.exception("scheduler lease renewal failed")
                self._step_down()

    async def _campaign(self) -> None:
        token = await self._store.acquire_lease(LEASE_NAME, self._owner, self._lease_ttl)
        if token is not None and not self.is_leader:
            logger.info("this process now runs the schedules (lease token %s)", token)
            self.token = token
            interrupted = await self._store.interrupt_runs(self._owner)
            if interrupted:
                logger.warning("%d run(s) of a previous leader were interrupted", interrupted)
            await self.rebuild()
            self._spawn(self.tick())
        elif token is None and self.is_leader:
            logger.warning("another process took over the schedules")
            self._step_down()
        self.token = token

    def _step_down(self) -> None:
        self.token = None
        if self._scheduler is not None:
            self._scheduler.remove_all_jobs()

    async def wait_idle(self) -> None:
        """Return when the background ticks this service started have finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    # -- jobs ----------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Replace every job with one per enabled schedule, plus the hourly hold check."""
        if self._scheduler is None or not self.is_leader:
            return
        self._scheduler.remove_all_jobs()
        for schedule in await self._store.schedules():
            if not schedule.enabled:
                continue
            self._scheduler.add_job(
                self._wake,
                trigger_for(schedule.when),
                args=[schedule.id],
                id=f"schedule-{schedule.id}",
                name=schedule.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(schedule.grace.total_seconds()),
                replace_existing=True,
            )
        self._scheduler.add_job(
            self.check_holds, "interval", hours=1, id="holds", replace_existing=True
        )
        if self._digest is not None:
            self._scheduler.add_job(
                self.send_digest, trigger_for(self._digest[1]), id="digest", replace_existing=True
            )
        if self.usage is not None and self._usage_at is not None:
            daily, weekly = self._usage_at
            self._scheduler.add_job(
                self.usage.daily, trigger_for(daily), id="usage-sample", replace_existing=True
            )
            if self.usage.posts:
                self._scheduler.add_job(
                    self.usage.weekly, trigger_for(weekly), id="usage-report", replace_existing=True
                )

    async def _wake(self, schedule_id: int) -> None:
        await self.tick(only=schedule_id)

    def _on_missed(self, event: JobExecutionEvent) -> None:
        # The loop was blocked past a job's grace: tick settles and reports the miss.
        logger.warning("apscheduler missed %s at %s", event.job_id, event.scheduled_run_time)
        self._spawn(self.tick())

    # -- decisions -----------------------------------------------------------------------

    async def tick(
        self, now: datetime | None = None, *, only: int | None = None
    ) -> list[RunReport]:
        """Run what is due now, report what was missed. Only the leader acts."""
        if not self.is_leader:
            return []
        moment = now or self._clock.now()
        reports = []
        for schedule in await self._store.schedules():
            if not schedule.enabled or (only is not None and schedule.id != only):
                continue
            report = await self._settle(schedule, moment)
            if report is not None:
                reports.append(report)
        return reports

    async def _settle(self, schedule: Schedule, now: datetime) -> RunReport | None:
        lock = self._locks.setdefault(schedule.id, asyncio.Lock())
        if lock.locked():
            return None  # one run per schedule at a time; the running one moves the mark
        async with lock:
            decision = due(schedule, now)
            if decision.settled is None:
                return None
            if self._observer is not None:
                lag = None if decision.run is None else (now - decision.run).total_seconds()
                self._observer.slot_settled(lag, len(decision.missed))
            report: RunReport | None
            if decision.run is not None:
                report = await self._runner.run(
                    schedule, decision.run, catch_up=decision.catch_up, missed=decision.missed
                )
                if report is None and decision.missed:
                    report = RunReport(schedule, None, missed=decision.missed)
            else:
                report = RunReport(schedule, None, missed=decision.missed)
            await self._store.set_last_fire(schedule.id, decision.settled)
            if report is not None:
                await self._report(report)
            return report

    async def _report(self, report: RunReport) -> None:
        # A report that cannot be delivered must not stop the other schedules' runs.
        try:
            await self._reporter.run_report(report)
        except Exception:
            logger.exception("could not deliver the report of %s", report.schedule.name)

    async def run_now(self, schedule: Schedule) -> RunReport | None:
        """``/snapshot schedule run``: a run at this moment, outside the timetable."""
        report = await self._runner.run(schedule, self._clock.now().replace(microsecond=0))
        if report is not None:
            await self._report(report)
        return report

    async def send_digest(self) -> None:
        """The optional daily overview, into the digest channel."""
        if self._digest is None:
            return
        await self._reporter.digest(await self._runner.digest(self._digest[0], self._clock.now()))

    async def check_holds(self) -> None:
        """End holds whose date passed; remind creators of unverified holds."""
        now = self._clock.now()
        await self._holds.end_expired(now)
        await self._holds.remind(now, self._reporter.hold_reminder)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("scheduler task failed", exc_info=task.exception())


def build_scheduler(
    core: Core,
    reporter: Reporter,
    *,
    lease_ttl: timedelta = timedelta(seconds=30),
    observer: SchedulerObserver | None = None,
) -> SchedulerService:
    """The scheduler over the core's services; schedule changes rebuild its jobs."""
    settings = core.settings
    digest = None
    if settings.digest_channel:
        digest = (
            settings.digest_channel,
            parse_when(["daily", settings.digest_at], settings.timezone),
        )
    usage = None
    usage_at = None
    if core.usage is not None:
        poster = reporter if isinstance(reporter, UsageReporter) else None
        usage = UsageJobs(
            core.usage, poster, settings.digest_channel, core.clock, drills=core.drills
        )
        usage_at = (
            parse_when(["daily", settings.digest_at], settings.timezone),
            parse_when(["weekly", USAGE_REPORT_DAY, settings.digest_at], settings.timezone),
        )
    service = SchedulerService(
        core.schedule_store,
        core.runs,
        core.holds,
        reporter,
        core.clock,
        core.owner,
        lease_ttl=lease_ttl,
        digest=digest,
        observer=observer,
        usage=usage,
        usage_at=usage_at,
    )
    core.schedules.on_change.append(service.rebuild)
    return service
