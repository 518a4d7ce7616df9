"""Slash commands through real signed HTTP requests: ack at once, then one live message."""

from __future__ import annotations

import itertools
import time

from core.domain.operation import OperationKind, OperationStatus
from tests.conftest import Services
from tests.fakes import slack_requests as req
from tests.slack.harness import ADMIN, CHANNEL, NOBODY, OPERATOR, SECRET, VIEWER, SlackBot


async def test_snapshot_is_acked_at_once_and_one_message_follows_the_stages(
    bot: SlackBot, services: Services
) -> None:
    services.hv.delay = 1.5  # libvirt is slow; the ack must not wait for it
    answer = await bot.command("/snapshot web-01 before-upgrade --desc 'pg 15'", user=OPERATOR)
    assert answer.status == 200
    assert answer.seconds < 1.0
    final = await bot.slack.wait_for_message(
        lambda m: m.text.startswith("✅"), channel=CHANNEL, timeout=15
    )
    history = bot.slack.history(CHANNEL, final.ts)
    assert history[0].startswith("⏳ *Snapshot* web-01 `before-upgrade` by <@U_OPS>")
    assert any("Pausing VM · Saving memory · Capturing disk" in t for t in history)
    assert "Snapshot `before-upgrade` of web-01 taken" in final.text
    assert len(bot.slack.messages(CHANNEL)) == 1, "one message, edited; not one per stage"
    updates = [c.at for c in bot.slack.calls_to("chat.update")]
    gaps = [b - a for a, b in itertools.pairwise(updates)]
    assert all(g > 0.9 for g in gaps[:-1]), f"edits coalesced to about one a second: {gaps}"


async def test_usage_errors_and_help_are_answered_in_the_ack(bot: SlackBot) -> None:
    wrong = await bot.command("/snapshot delete web-01")
    assert wrong.status == 200
    assert "missing the VM and the snapshot name" in wrong.text
    assert "/snapshot delete <vm> <name>" in wrong.text
    helped = await bot.command("/prune help")
    assert "--keep-daily N" in helped.text
    assert bot.slack.messages(CHANNEL) == []


async def test_refusals_name_the_missing_role_privately_and_are_audited(
    bot: SlackBot, services: Services
) -> None:
    answer = await bot.command("/snapshot web-01 sneaky", user=VIEWER)
    assert answer.status == 200
    reply = await bot.slack.wait_until(
        lambda: bot.slack.responses(answer.response_url), what="a private reply"
    )
    assert "needs the *operator* role" in reply[0].text
    assert reply[0].response_type == "ephemeral"
    assert bot.slack.messages(CHANNEL) == [], "a refusal is not posted in the channel"
    await bot.idle()
    (audit,) = [
        op for op in await services.catalogue.operations() if op.status is OperationStatus.REJECTED
    ]
    assert audit.kind is OperationKind.SNAPSHOT
    assert audit.requested_by == VIEWER
    assert audit.channel == CHANNEL
    assert audit.team == "T0001"

    nobody = await bot.command("/snapshot list", user=NOBODY)
    listing = await bot.slack.wait_until(lambda: bot.slack.responses(nobody.response_url))
    assert "web-01" not in listing[0].text, "deny by default: no role, no VMs shown"


async def test_unknown_names_get_suggestions_privately(bot: SlackBot) -> None:
    answer = await bot.command("/snapshot web-1 x", user=ADMIN)
    reply = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    assert "No VM named `web-1`" in reply[0].text
    assert "`web-01`" in reply[0].text


async def test_bad_signatures_and_stale_timestamps_are_refused(bot: SlackBot) -> None:
    body = req.slash_command_body(
        "/snapshot", "web-01 x", response_url=bot.slack.new_response_url(), trigger_id="t"
    )
    forged = req.sign("not-the-secret", body)
    status, _, _ = await bot.post(body, forged)
    assert status == 401
    stale = req.sign(SECRET, body, timestamp=int(time.time()) - 6 * 60)
    status, _, _ = await bot.post(body, stale)
    assert status == 401
    assert bot.slack.messages(CHANNEL) == []
    assert bot.ctx.jobs.running == 0


async def test_healthz_answers_for_a_load_balancer(bot: SlackBot) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.http.port}/healthz") as response,
    ):
        assert response.status == 200
        assert (await response.json())["ok"] is True


async def test_a_replayed_command_runs_once(bot: SlackBot, services: Services) -> None:
    body = req.slash_command_body(
        "/snapshot",
        "web-01 once",
        response_url=bot.slack.new_response_url(),
        trigger_id=bot.slack.new_trigger_id(),
        user_id=ADMIN,
    )
    for _ in range(3):  # a proxy retrying, or a captured request re-sent within 5 minutes
        status, _, _ = await bot.signed(body)
        assert status == 200
    await bot.slack.wait_for_message(lambda m: m.text.startswith("✅"), timeout=15)
    await bot.idle()
    snapshots = [
        o for o in await services.catalogue.operations() if o.kind is OperationKind.SNAPSHOT
    ]
    assert len(snapshots) == 1, [(o.status, o.error) for o in snapshots]
