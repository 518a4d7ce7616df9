"""Rate limits, channels the bot cannot post in, slow operations, App Home, Socket Mode, and the
manifest's commands."""

from __future__ import annotations

from bot.grammar import COMMANDS
from core.bootstrap import Core
from core.config import DEFAULT_COMMANDS
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeSlack
from tests.slack.harness import ADMIN, CHANNEL, NOBODY, RESTORER, SlackBot, running_bot
from tests.unit.test_manifest import load as load_manifest


async def test_rate_limited_edits_wait_and_the_outcome_still_arrives(
    bot: SlackBot, services: Services
) -> None:
    services.hv.delay = 0.3
    bot.slack.rate_limit("chat.update", times=2, retry_after=1)
    await bot.command("/snapshot web-01 under-pressure", user=ADMIN)
    final = await bot.slack.wait_for_message(lambda m: m.text.startswith("✅"), timeout=20)
    assert "under-pressure" in final.text
    limited = [c for c in bot.slack.calls_to("chat.update") if c.rate_limited]
    assert len(limited) == 2
    after = [c for c in bot.slack.calls_to("chat.update") if c.at > limited[0].at and c.ok]
    assert after, "edits resumed after Retry-After"
    assert after[0].at - limited[0].at >= 1.0, "Retry-After was honoured"


async def test_a_channel_the_bot_is_not_in_gets_the_reply_through_response_url(
    bot: SlackBot,
) -> None:
    bot.slack.fail("chat.postMessage", "not_in_channel", times=5)
    answer = await bot.command("/snapshot web-01 private-chan", user=ADMIN)
    posts = await bot.slack.wait_until(
        lambda: (
            [p for p in bot.slack.responses(answer.response_url) if "✅" in (p.text or "")] or None
        ),
        timeout=15,
    )
    assert "private-chan" in (posts[0].text or "")
    assert len(bot.slack.responses(answer.response_url)) <= 5


async def test_a_slow_operation_says_so_in_its_thread(core: Core, services: Services) -> None:
    async with (
        FakeSlack() as slack,
        running_bot(core, slack, slow_operation_seconds=0.5, progress_refresh_seconds=0.2) as bot,
    ):
        services.hv.delay = 1.2
        await bot.command("/snapshot web-01 slowpoke", user=ADMIN)
        parent = await slack.wait_for_message(
            lambda m: m.text.startswith("✅"), channel=CHANNEL, timeout=20
        )
        replies = slack.thread(CHANNEL, parent.ts)
        assert any("Still running after" in r.text for r in replies), slack.dump()


async def test_home_tab_shows_only_the_users_vms_and_refreshes_after_an_operation(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    status, _, _ = await bot.signed(req.app_home_opened_event_body(RESTORER))
    assert status == 200
    home = await bot.slack.wait_until(lambda: bot.slack.home_views.get(RESTORER))
    text = str(home["blocks"])
    assert "web-01" in text
    assert "`base`" in text
    assert "db-01" not in text, "a restorer on web-* does not see db-01"
    published = len(bot.slack.calls_to("views.publish"))
    await bot.command("/snapshot web-01 fresh", user=ADMIN)
    await bot.slack.wait_until(
        lambda: "fresh" in str(bot.slack.home_views.get(RESTORER, {}).get("blocks")) or None,
        what="the Home tab refreshed",
    )
    assert len(bot.slack.calls_to("views.publish")) > published

    await bot.signed(req.app_home_opened_event_body(NOBODY))
    nothing = await bot.slack.wait_until(lambda: bot.slack.home_views.get(NOBODY))
    assert "You have no role on any VM yet" in str(nothing["blocks"])


async def test_every_manifest_command_is_handled(bot: SlackBot) -> None:
    manifest = {c["command"] for c in load_manifest()["features"]["slash_commands"]}
    assert manifest == set(DEFAULT_COMMANDS.values())
    for command in sorted(manifest):
        answer = await bot.command(f"{command} help")
        assert answer.status == 200, command
        assert "Usage:" in answer.text, command
    assert {c.lstrip("/") for c in manifest} == set(COMMANDS)


async def test_renamed_commands_are_served_and_shown_under_their_new_names(
    core: Core,
) -> None:
    async with FakeSlack() as slack:
        commands = {**DEFAULT_COMMANDS, "snapshot": "/vm-snapshot"}
        async with running_bot(core, slack, commands=commands) as bot:
            answer = await bot.command("/vm-snapshot help")
            assert "/vm-snapshot list [<vm>]" in answer.text
            assert "/snapshot list" not in answer.text
            old = await bot.command("/snapshot help")
            assert "Usage:" not in old.text


async def test_socket_mode_serves_the_same_app(core: Core, services: Services) -> None:
    from bot.slack.transport import SocketModeTransport

    async with FakeSlack() as slack, running_bot(core, slack) as bot:
        socket = SocketModeTransport(
            bot.ctx.app,
            "xapp-1-test",
            bot.ctx.client,
            check_every=0.2,
            dead_after=0.5,
            ping_interval=0.5,
        )
        await socket.start()
        try:
            await slack.wait_for_socket()
            payload = req.slash_command_payload(
                "/snapshot",
                "web-02 over-socket",
                response_url=slack.new_response_url(),
                trigger_id=slack.new_trigger_id(),
                user_id=ADMIN,
            )
            ack = await slack.send_envelope("slash_commands", payload)
            assert "envelope_id" in ack
            await slack.wait_for_message(
                lambda m: "over-socket" in m.text and m.text.startswith("✅"), timeout=15
            )
            # the connection stalls silently; the watchdog replaces it
            opened = slack.socket_connections
            slack.stall_socket_connections()
            await slack.wait_until(
                lambda: slack.socket_connections > opened or None,
                timeout=30,
                what="a new Socket Mode connection",
            )
        finally:
            await socket.stop()


async def test_a_slow_slack_never_holds_up_the_operation(bot: SlackBot, services: Services) -> None:
    """Progress is shown in the background: a VM is not left stopped waiting for Slack."""
    bot.slack.delay("chat.postMessage", 3.0)
    bot.slack.delay("chat.update", 3.0)
    await bot.command("/snapshot web-01 while-slack-lags", user=ADMIN)
    await bot.slack.wait_for_message(
        lambda m: "while-slack-lags" in m.text and m.text.startswith("✅"), timeout=20
    )
    (op,) = [o for o in await services.catalogue.operations() if o.snapshot_label]
    assert op.duration_seconds is not None
    assert op.duration_seconds < 1.0, "the snapshot did not wait for Slack's slow answers"
