"""Run the Slack front end until asked to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.metrics import Metrics
from bot.slack.app import build_app, build_client
from bot.slack.reports import SlackReporter
from bot.slack.transport import HttpTransport, SocketModeTransport
from core.config import SlackSettings
from core.domain.operation import Operation
from core.services.facade import Core
from scheduler.service import build_scheduler

logger = logging.getLogger(__name__)

# On shutdown, running operations get this long to finish before they are cancelled (and left
# for the next start's reconciliation).
DRAIN_SECONDS = 60.0


async def run_slack(
    core: Core, settings: SlackSettings, stop: asyncio.Event, metrics: Metrics | None = None
) -> None:
    # One HTTP session for every call to Slack: connections stay open between calls. Closed
    # last, after the jobs that answer through it have drained.
    async with aiohttp.ClientSession() as http:
        await _serve(core, settings, stop, metrics, build_client(settings, metrics, session=http))


async def _serve(
    core: Core,
    settings: SlackSettings,
    stop: asyncio.Event,
    metrics: Metrics | None,
    client: AsyncWebClient,
) -> None:
    reporter = SlackReporter(client)
    scheduler = build_scheduler(core, reporter, observer=metrics)
    ctx = build_app(core, settings, client, scheduler)
    transports: list[HttpTransport | SocketModeTransport] = []
    if settings.signing_secret is not None:
        transports.append(
            HttpTransport(ctx.app, port=settings.port, metrics=metrics, requests=ctx.jobs.requests)
        )
    if settings.app_token is not None:
        transports.append(SocketModeTransport(ctx.app, settings.app_token.reveal(), client))
    for transport in transports:
        await transport.start()
    await scheduler.start()
    print(messages.slack_banner(core.libvirt_uri, settings), flush=True)
    if core.fallback_reason:
        print(messages.fallback_banner(core.fallback_reason, core.libvirt_uri), flush=True)

    async def tell(operations: Sequence[Operation]) -> None:
        print(messages.reconciled_text(operations), flush=True)
        await reporter.reconciled(operations)

    await core.watch.on_reconciled(tell)
    try:
        await stop.wait()
    finally:
        await scheduler.stop()
        for transport in transports:
            await transport.stop()
        await ctx.jobs.drain(DRAIN_SECONDS)
