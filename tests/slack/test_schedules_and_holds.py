"""Schedules from Slack (admin only) and the before-change hold's Verified / Restore prompt."""

from __future__ import annotations

from bot.slack import holds
from tests.conftest import Services
from tests.slack.harness import ADMIN, CHANNEL, NOBODY, OPERATOR, SlackBot


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
    assert "#1 nightly: web-*" in listing
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
