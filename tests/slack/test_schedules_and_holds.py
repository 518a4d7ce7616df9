"""Schedules from Slack (admin only), the before-change hold's Verified / Restore prompt, who
may hold and release, and retention of safety and manual snapshots through Slack."""

from __future__ import annotations

from bot import messages
from bot.slack import blocks, holds
from core.domain.operation import Actor, Operation, OperationKind, OperationStatus
from core.domain.snapshot import Origin, Snapshot
from core.services.reports import Digest, RunReport
from scheduler.service import build_scheduler
from tests.conftest import ALICE, Services
from tests.slack.harness import ADMIN, CHANNEL, NOBODY, OPERATOR, VIEWER, SlackBot


async def reply_to(bot: SlackBot, line: str, user: str) -> str:
    answer = await bot.command(line, user=user)
    assert answer.status == 200
    posts = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    return posts[0].text or ""


async def test_schedules_are_managed_by_admins_only(bot: SlackBot) -> None:
    refused = await reply_to(
        bot, "/snapshot schedule add nightly web-* daily 02:00 --keep-daily 7", OPERATOR
    )
    assert "needs the *admin* role" in refused
    added = await reply_to(
        bot,
        "/snapshot schedule add nightly web-* daily 02:00 --tz Europe/Berlin --keep-daily 7",
        ADMIN,
    )
    assert "Schedule added" in added
    assert "daily at 02:00 Europe/Berlin" in added
    assert "keep daily=7" in added
    assert f"reports to <#{CHANNEL}>" in added
    assert "First run" in added
    listing = await reply_to(bot, "/snapshot schedule list", ADMIN)
    assert "#1 nightly: web-" in listing
    bad = await reply_to(bot, "/snapshot schedule add weekly all weekly funday 03:00", ADMIN)
    assert "'funday' is not a weekday" in bad
    empty = await reply_to(bot, "/snapshot schedule add x all daily 03:00 --keep-daily 0", ADMIN)
    assert "policy with no keep rule" in empty
    removed = await reply_to(bot, "/snapshot schedule remove nightly", ADMIN)
    assert "Schedule #1 nightly removed" in removed
    unknown = await reply_to(bot, "/snapshot schedule remove nightly", ADMIN)
    assert "No schedule `nightly`" in unknown


async def test_a_before_change_snapshot_prompts_its_creator_and_verified_releases_it(
    bot: SlackBot, services: Services
) -> None:
    await bot.command("/snapshot web-01 pre-change --hold", user=OPERATOR)
    prompt = await bot.slack.wait_for_message(
        lambda m: "held until you verify" in m.text, channel=OPERATOR
    )
    buttons = [e for b in prompt.blocks for e in b.get("elements", []) if b["type"] == "actions"]
    assert {b["action_id"] for b in buttons} == {holds.VERIFIED_ACTION, holds.RESTORE_ACTION}
    (snap,) = await services.catalogue.snapshots()
    assert snap.hold is not None

    # prune leaves it alone while held
    listing = await reply_to(bot, "/snapshot list web-01", ADMIN)
    assert "held until verified" in listing

    value = buttons[0]["value"]
    hook = bot.slack.new_response_url(channel=OPERATOR, message_ts=prompt.ts)
    await bot.click(holds.VERIFIED_ACTION, value, user=NOBODY, response_url=hook)
    await bot.idle()
    assert (await services.catalogue.snapshots())[0].hold is not None, "not theirs to verify"
    await bot.click(holds.VERIFIED_ACTION, value, user=OPERATOR, response_url=hook)
    await bot.idle()
    assert (await services.catalogue.snapshots())[0].hold is None
    assert any("verified the change" in (p.text or "") for p in bot.slack.responses(hook))
    releases = await audit(services, OperationKind.RELEASE)
    assert [(op.requested_by, op.status) for op in releases] == [
        (NOBODY, OperationStatus.REJECTED),
        (OPERATOR, OperationStatus.SUCCEEDED),
    ]


class RunReports:
    def __init__(self) -> None:
        self.runs: list[RunReport] = []

    async def run_report(self, report: RunReport) -> None:
        self.runs.append(report)

    async def hold_reminder(self, snapshot: Snapshot) -> None:
        raise AssertionError("no hold in this test")

    async def digest(self, digest: Digest) -> None:
        raise AssertionError("no digest in this test")


async def audit(services: Services, kind: OperationKind) -> list[Operation]:
    ops = await services.catalogue.operations(limit=500)
    return sorted((op for op in ops if op.kind is kind), key=lambda op: op.started_at)


async def test_only_the_creator_or_an_admin_may_hold_or_release_from_slack(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "admins", actor=Actor(ADMIN, "slack"))
    await services.service.create_snapshot("web-01", "ops", actor=Actor(OPERATOR, "slack"))

    refused = await reply_to(bot, "/snapshot hold web-01 admins", OPERATOR)
    assert "Only the snapshot's creator (U_ADMIN) or an admin may hold `admins`" in refused
    assert "is now held" in await reply_to(bot, "/snapshot hold web-01 ops", OPERATOR)
    assert "is now held" in await reply_to(bot, "/snapshot hold web-01 admins", ADMIN)

    for user in (OPERATOR, VIEWER):
        refused = await reply_to(bot, "/snapshot release web-01 admins", user)
        assert "Only the snapshot's creator (U_ADMIN) or an admin may release the hold" in refused
    assert "needs the *viewer* role" in await reply_to(
        bot, "/snapshot release web-01 admins", NOBODY
    )
    held = {s.label: s.hold for s in await services.catalogue.snapshots()}
    assert held["admins"] is not None
    assert held["ops"] is not None

    # An admin may release anyone's hold.
    assert "no longer held" in await reply_to(bot, "/snapshot release web-01 ops", ADMIN)

    holds_ = await audit(services, OperationKind.HOLD)
    assert [(op.requested_by, op.status, op.snapshot_label) for op in holds_] == [
        (OPERATOR, OperationStatus.REJECTED, None),
        (OPERATOR, OperationStatus.SUCCEEDED, "ops"),
        (ADMIN, OperationStatus.SUCCEEDED, "admins"),
    ]
    assert all(op.channel == CHANNEL for op in holds_)
    releases = await audit(services, OperationKind.RELEASE)
    assert [(op.requested_by, op.status) for op in releases] == [
        (OPERATOR, OperationStatus.REJECTED),
        (VIEWER, OperationStatus.REJECTED),
        (ADMIN, OperationStatus.SUCCEEDED),
    ]


async def test_prune_preview_shows_safety_snapshots_with_their_reasons(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "base", actor=ALICE, origin=Origin.SCHEDULED)
    for _ in range(5):  # each restore leaves a safety snapshot with the guest's RAM
        await services.service.restore("web-01", "base", actor=ALICE)
    safety = sorted(
        (s for s in await services.catalogue.snapshots() if s.origin is Origin.SAFETY),
        key=lambda s: s.created_at,
        reverse=True,
    )
    assert len(safety) == 5

    answer = await bot.command("/prune web-01 --keep-last 1", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    text = preview[0].text or ""
    assert "safety snapshots: the 3 newest and any not older than 14 days" in text
    lines = text.splitlines()

    def line_of(label: str) -> str:
        return next(line for line in lines if f" {label} " in line)

    for snap in safety[:3]:
        assert "keep" in line_of(snap.label)
        assert line_of(snap.label).endswith("safety snapshot: one of the 3 newest")
    for snap in safety[3:]:
        assert "DELETE" in line_of(snap.label)
        assert line_of(snap.label).endswith(
            "safety snapshot older than 14 days and not among the 3 newest"
        )
    assert line_of("base").endswith("last #1")

    buttons = [e for b in preview[0].blocks or [] if b["type"] == "actions" for e in b["elements"]]
    confirm = next(b for b in buttons if b["action_id"] == blocks.CONFIRM_ACTION)
    await bot.click(
        blocks.CONFIRM_ACTION, confirm["value"], user=ADMIN, response_url=answer.response_url
    )
    final = await bot.slack.wait_for_message(lambda m: "Prune finished" in m.text, timeout=15)
    assert "deleted 2" in final.text
    await bot.idle()
    left = {s.label for s in await services.catalogue.snapshots()}
    assert left == {"base", *(s.label for s in safety[:3])}


async def test_a_schedule_with_include_manual_prunes_manual_snapshots_too(
    bot: SlackBot, services: Services
) -> None:
    for n in range(2):
        services.hv._clock += 86_400
        await services.service.create_snapshot("web-01", f"manual-{n}", actor=ALICE)
    added = await reply_to(
        bot,
        "/snapshot schedule add nightly web-01 daily 02:00 --keep-last 1 --include-manual",
        ADMIN,
    )
    assert "keep last=1, manual snapshots included" in added
    (schedule,) = await bot.core.schedules.list()
    assert schedule.policy is not None
    assert schedule.policy.include_manual
    assert schedule.policy.safety_keep_last is None, "the configured rule applies at run time"

    # Slack's front end has no timetable in these tests: the scheduler runs the slot itself.
    reports = RunReports()
    report = await build_scheduler(bot.core, reports).run_now(schedule)
    assert report is not None
    assert reports.runs == [report]
    ran = messages.run_report(report)
    assert "pruned 2" in ran
    assert "`manual-1` (beyond last=1)" in ran
    labels = [s.label for s in await services.catalogue.snapshots()]
    assert len(labels) == 1
    assert labels[0].startswith("nightly-")

    refused = await reply_to(
        bot, "/snapshot schedule add plain web-01 daily 03:00 --include-manual", ADMIN
    )
    assert "add its --keep-… rules" in refused


async def test_deleting_a_held_snapshot_in_slack_says_who_holds_it(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    await bot.command("/snapshot web-01 pre-change --hold", user=OPERATOR)
    await bot.idle()
    refused = await reply_to(bot, "/snapshot delete web-01 pre-change", ADMIN)
    assert "`pre-change` of web-01 is held until verified (hold placed by U_OPS)" in refused
    assert "/snapshot release web-01 pre-change" in refused
    assert "pre-change" in {s.label for s in await services.catalogue.snapshots()}
