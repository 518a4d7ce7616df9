"""Calls to Slack reuse their connections: the Web API client and every ``response_url`` answer
share one HTTP session (slack_sdk would otherwise open a connection, and against Slack a TLS
handshake, for every call)."""

from __future__ import annotations

import asyncio

from tests.slack.harness import ADMIN, SlackBot


async def test_a_burst_of_answers_reuses_a_few_connections(bot: SlackBot) -> None:
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
    # aiohttp keeps up to 100 connections open per session: a burst opens some at once, and
    # each then serves the calls after it; one per call means no reuse at all.
    assert connections <= calls // 2, f"{connections} connections for {calls} calls to Slack"
