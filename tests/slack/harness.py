"""The real bolt app over HTTP (and Socket Mode) against the fake Slack.

``SlackBot`` starts snapbot's Slack front end exactly as ``snapbot run`` does (same builder, same
transport), pointed at ``FakeSlack`` through ``SLACK_API_URL``, and sends it correctly signed
requests with Slack's payload shapes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from bot.metrics import Metrics
from bot.slack import blocks
from bot.slack.app import build_app, build_client
from bot.slack.context import SlackContext
from bot.slack.transport import HttpTransport
from core.bootstrap import Core
from core.config import Secret, SlackSettings
from core.domain.access import parse_grants
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ADMIN = "U_ADMIN"
OPERATOR = "U_OPS"  # through the S_OPS user group
RESTORER = "U_RESTORER"  # restorer on web-* only
VIEWER = "U_VIEWER"
NOBODY = "U_NOBODY"
CHANNEL = "C0001"

GRANTS: list[dict[str, object]] = [
    {"role": "operator", "usergroups": ["S_OPS"]},
    {"role": "restorer", "users": [RESTORER], "vms": ["web-*", "snapbot-test-*"]},
    {"role": "viewer", "users": [VIEWER]},
]


@dataclass
class Answer:
    status: int
    text: str
    seconds: float
    response_url: str
    trigger_id: str


class SlackBot:
    def __init__(
        self, slack: FakeSlack, ctx: SlackContext, http: HttpTransport, core: Core
    ) -> None:
        self.slack = slack
        self.ctx = ctx
        self.core = core  # what the app was built on, for tests to look behind it
        self.http = http
        self._session = aiohttp.ClientSession()

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}/slack/events"

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, float]:
        started = time.monotonic()
        async with self._session.post(self.events_url, data=body, headers=headers) as response:
            return response.status, await response.text(), time.monotonic() - started

    async def signed(self, body: bytes, *, timestamp: int | None = None) -> tuple[int, str, float]:
        return await self.post(body, req.sign(SECRET, body, timestamp))

    async def command(self, line: str, *, user: str = ADMIN, channel: str = CHANNEL) -> Answer:
        """Send ``/snapshot web-01 x`` as Slack would."""
        command, _, text = line.partition(" ")
        response_url = self.slack.new_response_url(channel=channel)
        trigger_id = self.slack.new_trigger_id(user_id=user)
        body = req.slash_command_body(
            command,
            text,
            response_url=response_url,
            trigger_id=trigger_id,
            user_id=user,
            channel_id=channel,
        )
        status, answer, seconds = await self.signed(body)
        return Answer(status, answer, seconds, response_url, trigger_id)

    async def submit(self, view: dict[str, Any], values: dict[str, Any], *, user: str) -> Any:
        status, text, _ = await self.signed(req.submission_for(view, values=values, user_id=user))
        assert status == 200, text
        return json.loads(text) if text else None

    async def click(self, action_id: str, value: str, *, user: str, response_url: str) -> None:
        body = req.block_actions_body(
            action_id=action_id,
            value=value,
            user_id=user,
            channel_id=CHANNEL,
            message_ts="1700000000.000001",
            response_url=response_url,
            trigger_id=self.slack.new_trigger_id(user_id=user),  # Slack issues one per click
        )
        status, text, _ = await self.signed(body)
        assert status == 200, text

    async def idle(self) -> None:
        """Wait for every background job (operations started by the requests) to end."""
        async with asyncio.timeout(30):
            await self.ctx.jobs.wait_idle()

    async def close(self) -> None:
        await self._session.close()


def confirm_value(message_blocks: list[dict[str, Any]] | None) -> str:
    """The value of the Confirm button in a preview's blocks (what a click sends back)."""
    return str(
        next(
            e["value"]
            for b in message_blocks or []
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == blocks.CONFIRM_ACTION
        )
    )


def slack_settings(slack: FakeSlack, **overrides: Any) -> SlackSettings:
    settings = SlackSettings(
        bot_token=Secret("xoxb-test-token"),
        signing_secret=Secret(SECRET),
        api_url=slack.api_url,
        port=0,
    )
    return replace(settings, **overrides)


@asynccontextmanager
async def running_bot(
    core: Core,
    slack: FakeSlack,
    *,
    grants: list[dict[str, object]] = GRANTS,
    metrics: Metrics | None = None,
    **overrides: Any,
) -> AsyncIterator[SlackBot]:
    """The bolt app over real HTTP, as ``snapbot run`` serves it (with ``metrics``: Slack's
    events and /metrics on one transport, the Web API client's failures counted)."""
    slack.usergroups.setdefault("S_OPS", [OPERATOR])
    core = replace(core, settings=replace(core.settings, access=parse_grants(grants, [ADMIN])))
    settings = slack_settings(slack, **overrides)
    # as run_slack does: one HTTP session for every call to Slack
    session = aiohttp.ClientSession()
    client = build_client(settings, metrics, session=session)
    ctx = build_app(core, settings, client)
    http = HttpTransport(
        ctx.app, host="127.0.0.1", port=0, metrics=metrics, requests=ctx.jobs.requests
    )
    await http.start()
    bot = SlackBot(slack, ctx, http, core)
    try:
        yield bot
    finally:
        await ctx.jobs.drain(10)
        await bot.close()
        await http.stop()
        await session.close()
