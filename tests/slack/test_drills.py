"""``/snapshot drill`` in Slack, as users meet it: the live message ends with the drill's report
(pass or fail, the restore point's age, time until ready, what went wrong and the VM's owner
mentioned), the console screenshot is uploaded in its thread, refusals are private, and the
Home tab shows each VM's last passing drill. Over the fake hypervisor, a real backup store and
the fake drill lab."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.slack.reports import SlackReporter
from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.libvirt.drill import ppm_to_png
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock
from core.config import Settings
from core.domain.drills import DrillPolicies, DrillPolicy, ReadyKind, ReadySignal
from scheduler.service import UsageJobs
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess
from tests.fakes.drills import FakeDrillLab
from tests.fakes.slack import FakeMessage, FakeSlack
from tests.slack.harness import ADMIN, CHANNEL, RESTORER, SlackBot, running_bot

OWNER = "U0OWNER"
DIGEST = "C_DIGEST"
# A 2x1 picture as QEMU's screendump gives it (PPM), converted as the adapter converts it.
PNG = ppm_to_png(b"P6\n2 1\n255\n\xff\x00\x00\x00\xff\x00")


@pytest.fixture
def lab() -> Iterator[FakeDrillLab]:
    made = FakeDrillLab()
    made.script.screenshot = PNG
    yield made
    made.close()


@pytest.fixture
async def drill_bot(
    services: Services,
    tmp_path: Path,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    lab: FakeDrillLab,
    slack: FakeSlack,
) -> AsyncIterator[SlackBot]:
    settings = Settings(
        libvirt_uri="fake:///",
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url="sqlite://:memory:",
        drills=DrillPolicies(
            (DrillPolicy("web-*", ready=ReadySignal(ReadyKind.CONSOLE, "login:"), owner=OWNER),)
        ),
    )
    core: Core = wire(
        settings,
        services.hv,
        services.catalogue,
        SystemClock(),
        libvirt_uri="fake:///",
        store=backup_store,
        disks=fake_disks,
        lab=lab,
    )
    assert core.backups is not None
    await core.backups.create_backup("web-01", "night-1", actor=ALICE)
    async with running_bot(core, slack) as running:
        yield running


def final_text(slack: FakeSlack) -> str:
    posted = [m for m in slack.messages(CHANNEL) if m.thread_ts is None and not m.files]
    assert posted, slack.dump()
    return posted[-1].text


def screenshot_message(slack: FakeSlack) -> FakeMessage | None:
    return next((m for m in slack.messages(CHANNEL) if m.files), None)


async def test_a_passing_drill_reports_in_the_channel_with_its_screenshot(
    drill_bot: SlackBot, lab: FakeDrillLab
) -> None:
    drill_bot.ctx.home_viewers.add(ADMIN)
    answer = await drill_bot.command("/snapshot drill web-01", user=ADMIN)
    assert answer.status == 200
    shot = await drill_bot.slack.wait_until(lambda: screenshot_message(drill_bot.slack))
    await drill_bot.idle()

    text = final_text(drill_bot.slack)
    assert "Drill passed" in text
    assert "`night-1`" in text
    assert " old*" in text  # the point's age: what a recovery would lose
    assert "Ready *0.5 s*" in text  # how long the restored VM took
    assert "a console line matching /login:/" in text
    assert "was removed with its files" in text
    assert OWNER not in text, "a passing drill bothers nobody"

    (file_id,) = shot.files
    assert shot.thread_ts is not None, "the screenshot goes in the report's thread"
    assert drill_bot.slack.file(file_id).data == PNG
    assert shot.images() == [file_id]
    assert lab.live == set()

    home = json.dumps(drill_bot.slack.home(ADMIN))
    assert "Restore drills" in home
    assert "web-01: last passing drill" in home
    assert "web-02: never passed a restore drill" in home


async def test_a_failing_drill_says_what_went_wrong_and_mentions_the_owner(
    drill_bot: SlackBot, lab: FakeDrillLab
) -> None:
    lab.script.ready_after = None
    lab.script.failure = "no console line matched; its console's last lines: Kernel panic"
    await drill_bot.command("/snapshot drill web-01 night-1", user=ADMIN)
    await drill_bot.slack.wait_until(lambda: screenshot_message(drill_bot.slack))
    await drill_bot.idle()
    text = final_text(drill_bot.slack)
    assert "Drill failed" in text
    assert f"<@{OWNER}>" in text
    assert "Kernel panic" in text
    assert lab.live == set()


async def test_a_drill_is_refused_privately_without_the_restore_right(
    drill_bot: SlackBot, lab: FakeDrillLab
) -> None:
    answer = await drill_bot.command("/snapshot drill db-01", user=RESTORER)
    await drill_bot.idle()
    replies = drill_bot.slack.responses(answer.response_url)
    assert any("You may not" in (r.text or "") for r in replies)
    assert lab.made == []
    assert not [m for m in drill_bot.slack.messages(CHANNEL) if m.by_bot]


async def test_a_vm_without_a_restore_point_is_told_how_to_make_one(
    drill_bot: SlackBot, lab: FakeDrillLab
) -> None:
    answer = await drill_bot.command("/snapshot drill web-02", user=ADMIN)
    await drill_bot.idle()
    replies = drill_bot.slack.responses(answer.response_url)
    assert any("no snapshot or restore point to drill" in (r.text or "") for r in replies)
    assert lab.made == []


async def test_the_weekly_report_flags_vms_without_a_passing_drill_in_35_days(
    drill_bot: SlackBot, lab: FakeDrillLab
) -> None:
    await drill_bot.command("/snapshot drill web-01", user=ADMIN)
    await drill_bot.slack.wait_until(lambda: screenshot_message(drill_bot.slack))
    await drill_bot.idle()
    core = drill_bot.core
    assert core.usage is not None
    jobs = UsageJobs(
        core.usage, SlackReporter(drill_bot.ctx.client), DIGEST, core.clock, drills=core.drills
    )
    await jobs.weekly()
    flags = [m for m in drill_bot.slack.messages(DIGEST) if "restore drill" in m.text]
    (flag,) = flags
    assert "2 VM(s) without a passing restore drill in 35 days" in flag.text
    assert "web-02: never" in flag.text
    assert "db-01: never" in flag.text
    assert "web-01" not in flag.text, "drilled just now"
