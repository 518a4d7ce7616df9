"""Acks first, through real signed HTTP requests: bolt answers Slack as soon as a listener acks
(``process_before_response``, with the guard returning at the ack), nothing after an ack can
delay or spoil it, and a burst right after start costs Slack one ``auth.test`` and reuses its
connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slack_bolt.async_app import AsyncAck

from bot.slack.guard import Kind, guarded
from tests.fakes import slack_requests as req
from tests.slack.harness import ADMIN, SlackBot


async def test_a_burst_right_after_start_asks_slack_who_the_bot_is_once(bot: SlackBot) -> None:
    answers = await asyncio.gather(
        *(bot.command("/snapshot list web-01", user=ADMIN) for _ in range(20))
    )
    assert [a.status for a in answers] == [200] * 20
    await bot.idle()
    for answer in answers:
        await bot.slack.wait_until(lambda a=answer: bot.slack.responses(a.response_url))
    calls = bot.slack.calls_to("auth.test")
    assert len(calls) == 1, f"one auth.test for the whole burst, not {len(calls)}"


async def test_a_burst_of_answers_reuses_a_few_connections(bot: SlackBot) -> None:
    """The Web API client and every ``response_url`` answer share one HTTP session: slack_sdk
    would otherwise open a connection, and against Slack a TLS handshake, for every call."""
    answers = await asyncio.gather(
        *(bot.command("/snapshot list web-01", user=ADMIN) for _ in range(20))
    )
    assert [a.status for a in answers] == [200] * 20
    await bot.idle()
    for answer in answers:
        await bot.slack.wait_until(lambda a=answer: bot.slack.responses(a.response_url))
    calls = len(bot.slack.calls) + sum(len(bot.slack.responses(a.response_url)) for a in answers)
    connections = len(bot.slack.http_connections)
    assert calls >= 21
    # A burst opens some connections at once and each then serves the calls after it; one
    # per call would mean no reuse at all.
    assert connections <= calls // 2, f"{connections} connections for {calls} calls to Slack"


async def test_the_ack_leaves_before_the_work_after_it(bot: SlackBot) -> None:
    finished = asyncio.Event()

    async def slow(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack(text="on it")
        await asyncio.sleep(1.5)  # anything after the ack: Slack must not wait for it
        finished.set()

    bot.ctx.app.command("/slow")(guarded(bot.ctx, Kind.COMMAND)(slow))
    answer = await bot.command("/slow now", user=ADMIN)
    assert answer.status == 200
    assert "on it" in answer.text
    assert answer.seconds < 1.0, f"the ack waited for the listener: {answer.seconds:.2f} s"
    assert not finished.is_set()
    await bot.idle()  # the rest of the listener is a tracked job
    assert finished.is_set()


async def test_a_failure_after_the_ack_keeps_the_ack_and_tells_the_person(bot: SlackBot) -> None:
    async def boom(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack(text="accepted")
        raise RuntimeError("after the ack")

    bot.ctx.app.command("/boom")(guarded(bot.ctx, Kind.COMMAND)(boom))
    answer = await bot.command("/boom now", user=ADMIN)
    assert answer.status == 200, "an error after the ack must not turn it into a 500"
    assert "accepted" in answer.text
    note = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    assert "reference" in note[0].text.lower()


async def test_a_failure_before_the_ack_is_answered_in_the_ack(bot: SlackBot) -> None:
    async def early(ack: AsyncAck, body: dict[str, Any]) -> None:
        raise RuntimeError("before the ack")

    bot.ctx.app.command("/early")(guarded(bot.ctx, Kind.COMMAND)(early))
    answer = await bot.command("/early now", user=ADMIN)
    assert answer.status == 200
    assert "reference" in answer.text.lower()


async def test_an_event_is_acked_before_its_listener_runs(bot: SlackBot) -> None:
    bot.slack.delay("views.publish", 1.5)
    started = time.monotonic()
    status, _, _ = await bot.signed(req.app_home_opened_event_body(ADMIN))
    assert status == 200
    assert time.monotonic() - started < 1.0, "Slack waited for the Home tab to be published"
    await bot.idle()
    assert bot.slack.home(ADMIN), "the Home tab was published after the ack"


async def test_restore_opens_its_modal_within_the_trigger_life_and_acks_at_once(
    bot: SlackBot,
) -> None:
    bot.slack.delay("views.open", 0.8)
    answer = await bot.command("/restore web-01", user=ADMIN)
    assert answer.status == 200
    assert answer.seconds < 0.7, "the ack did not wait for views.open"
    await bot.idle()
    assert [c.ok for c in bot.slack.calls_to("views.open")] == [True]
