"""The scheduler's usage jobs: a sample every day at the digest's time, the weekly report on
Mondays, and both only where there is somewhere to post (the digest channel)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from core.bootstrap import Core
from core.domain.snapshot import Snapshot
from core.domain.usage import Forecast, UsageReport
from core.services.reports import Digest, RunReport
from scheduler.service import build_scheduler


class Recorder:
    """A reporter that also takes usage posts."""

    def __init__(self) -> None:
        self.weekly: list[tuple[str, UsageReport, bytes | None]] = []
        self.warnings: list[tuple[str, Sequence[Forecast], date]] = []

    async def run_report(self, report: RunReport) -> None: ...

    async def hold_reminder(self, snapshot: Snapshot) -> None: ...

    async def digest(self, digest: Digest) -> None: ...

    async def usage_report(self, channel: str, report: UsageReport, chart: bytes | None) -> None:
        self.weekly.append((channel, report, chart))

    async def fill_warning(self, channel: str, forecasts: Sequence[Forecast], today: date) -> None:
        self.warnings.append((channel, forecasts, today))


def with_digest(core: Core) -> Core:
    settings = replace(core.settings, digest_channel="C0DIGEST", digest_at="07:30")
    return replace(core, settings=settings)


async def test_usage_jobs_run_daily_and_weekly_at_the_digest_time(core: Core) -> None:
    recorder = Recorder()
    scheduler = build_scheduler(with_digest(core), recorder)
    await scheduler.start()
    try:
        jobs = {j.id: j for j in scheduler._scheduler.get_jobs()}  # type: ignore[union-attr]
        daily, weekly = jobs["usage-sample"], jobs["usage-report"]
        assert (daily.next_run_time.hour, daily.next_run_time.minute) == (7, 30)
        assert weekly.next_run_time.strftime("%a %H:%M") == "Mon 07:30"
        assert scheduler.usage is not None
        await scheduler.usage.weekly()
    finally:
        await scheduler.stop()
    ((channel, report, chart),) = recorder.weekly
    assert channel == "C0DIGEST"
    assert {v.vm_name for v in report.vms} == {"web-01", "web-02", "db-01"}
    assert chart is not None
    assert chart.startswith(b"\x89PNG")


async def test_without_a_digest_channel_usage_is_sampled_but_not_posted(core: Core) -> None:
    assert core.usage is not None
    recorder = Recorder()
    scheduler = build_scheduler(core, recorder)
    await scheduler.start()
    try:
        ids = {j.id for j in scheduler._scheduler.get_jobs()}  # type: ignore[union-attr]
        assert "usage-sample" in ids
        assert "usage-report" not in ids
        assert scheduler.usage is not None
        await scheduler.usage.daily()
    finally:
        await scheduler.stop()
    assert recorder.weekly == []
    history = await core.usage.history(None, 1)
    assert [s.label for s in history.vms] == ["db-01", "web-01", "web-02"], "sampled today"
