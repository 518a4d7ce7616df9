"""A schedule on the real guest: it runs, snapshots, prunes by its policy in libvirt, and the
report reaches the schedule's Slack channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.slack.app import build_client
from bot.slack.reports import SlackReporter
from core.bootstrap import wire
from core.config import Settings
from core.domain.retention import RetentionPolicy
from core.domain.schedule import Schedule, parse_when
from core.domain.snapshot import Origin
from scheduler.service import build_scheduler
from tests.conftest import ALICE
from tests.fakes.slack import FakeSlack
from tests.slack.harness import slack_settings
from tests.system.conftest import TEST_URI, Guest, RealCore

pytestmark = pytest.mark.system


class Clock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


async def test_a_schedule_snapshots_prunes_and_reports_to_its_channel(
    real: RealCore, guest: Guest, tmp_path: object
) -> None:
    for n in range(2):
        await real.service.create_snapshot(
            guest.name, f"earlier-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )
    settings = Settings(TEST_URI, True, tmp_path, "sqlite://:memory:")  # type: ignore[arg-type]
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = Clock(start)
    core = wire(settings, real.hv, real.catalogue, clock, libvirt_uri=TEST_URI)
    slot = start + timedelta(minutes=5)
    await real.catalogue.add_schedule(
        Schedule(
            id=0,
            name="nightly",
            vms=guest.name,
            when=parse_when(["daily", f"{slot:%H:%M}"], "UTC"),
            policy=RetentionPolicy.from_counts(last=2),
            channel="C_REPORTS",
            owner="U_OWNER",
            created_at=start,
        )
    )
    async with FakeSlack() as slack:
        client = build_client(slack_settings(slack))
        scheduler = build_scheduler(core, SlackReporter(client))
        await scheduler.start()
        await scheduler.wait_idle()
        try:
            clock.moment = slot + timedelta(seconds=2)
            (report,) = await scheduler.tick()
            message = await slack.wait_for_message(
                lambda m: "Schedule nightly" in m.text, channel="C_REPORTS"
            )
        finally:
            await scheduler.stop()
            if client.session is not None:
                await client.session.close()
    (outcome,) = report.outcomes
    assert outcome.ok
    assert outcome.memory_bytes
    assert outcome.prune is not None
    assert [d.snapshot.label for d in outcome.prune.deleted] == ["earlier-0"]
    vm = await real.hv.get_vm(guest.name)
    left = sorted(s.description.split("\n")[0] for s in await real.hv.list_snapshots(vm))
    assert left == [
        "snapbot label: earlier-1",
        f"snapbot label: nightly-{slot:%Y%m%d-%H%M}",
    ]
    assert f"`nightly-{slot:%Y%m%d-%H%M}`" in message.text
    assert "pruned 1 (`earlier-0` (beyond last=2))" in message.text
    assert "Storage: disk images" in message.text
    assert "free in" in message.text
