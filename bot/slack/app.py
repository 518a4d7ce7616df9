"""Build the Slack front end: the Web API client, the bolt ``AsyncApp`` and every surface.

Surfaces live one per module, each with ``register(app, ctx)``:

    commands          /snapshot, /restore, /prune (slash commands)
    restore_modal     the typed-name confirmation and the snapshot picker
    confirm_buttons   Confirm / Cancel under delete and prune previews
    home              the App Home tab
    holds             Verified / Restore under a before-change hold
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.dispatch import Dispatcher
from bot.metrics import Metrics, counting_retry_handlers
from bot.slack import commands, confirm_buttons, holds, home, restore_modal
from bot.slack.context import SlackContext, SlackDirectory, SlackIdentity
from core.config import SlackSettings
from core.ports import ScheduleRunNow
from core.services.facade import Core

logger = logging.getLogger(__name__)

# Events API deliveries are retried by Slack (and may arrive twice over Socket Mode): an event
# id seen in this window is acknowledged and dropped.
EVENT_DEDUPE_SECONDS = 600.0


def build_client(
    settings: SlackSettings,
    metrics: Metrics | None = None,
    session: aiohttp.ClientSession | None = None,
) -> AsyncWebClient:
    """The Web API client: 429s wait for Retry-After, 5xx and connection errors retry (each
    failure and retry counted in ``metrics`` when given). Given ``session``, every call and
    every ``response_url`` answer (bot/slack/webhooks.py) reuses its connections; without,
    slack_sdk opens and closes one per call."""
    kwargs: dict[str, Any] = {}
    if settings.api_url:
        kwargs["base_url"] = settings.api_url
    return AsyncWebClient(
        token=settings.bot_token.reveal(),
        retry_handlers=counting_retry_handlers(
            [
                ("connection", AsyncConnectionErrorRetryHandler(max_retry_count=2)),
                ("rate_limited", AsyncRateLimitErrorRetryHandler(max_retry_count=3)),
                ("server_error", AsyncServerErrorRetryHandler(max_retry_count=2)),
            ],
            metrics,
        ),
        session=session,
        **kwargs,
    )


class _SeenEvents:
    def __init__(self, window: float) -> None:
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now - self._window:
            self._seen.popitem(last=False)
        if event_id in self._seen:
            return False
        self._seen[event_id] = now
        return True


def _delivery_key(body: dict[str, Any]) -> str | None:
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    # Slash commands and block actions carry a trigger id Slack issues once per user action.
    # View submissions are left alone: their repeats are settled by the stored confirmation.
    if body.get("type") in (None, "block_actions") and body.get("trigger_id"):
        return f"trigger:{body['trigger_id']}"
    return None


class _DropRedeliveries(AsyncMiddleware):
    """A request seen before is acknowledged and dropped: Events API retries by event id, and
    replays of a command or a click (a proxy retrying, a captured signed request re-sent inside
    Slack's 5-minute window) by their single-use trigger id. (A middleware class: bolt calls
    it directly, where a function would have its arguments worked out on every request.)"""

    def __init__(self, seen: _SeenEvents) -> None:
        self._seen = seen

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        key = _delivery_key(req.body)
        if key is not None and not self._seen.first_time(key):
            logger.info("dropping a repeated delivery (%s)", key)
            return BoltResponse(status=200, body="")
        return await next()


def build_app(
    core: Core,
    settings: SlackSettings,
    client: AsyncWebClient,
    scheduler: ScheduleRunNow | None = None,
) -> SlackContext:
    """The bolt app with every surface registered; returned inside its ``SlackContext``."""
    secret = settings.signing_secret.reveal() if settings.signing_secret else None
    identity = SlackIdentity(client)
    app = AsyncApp(
        # Without the token: bolt takes it from ``authorize`` (and would log that it ignores
        # a client's token when given both). Otherwise the same client.
        client=AsyncWebClient(
            base_url=client.base_url,
            timeout=client.timeout,
            session=client.session,
            headers=client.headers,
            retry_handlers=client.retry_handlers,
            logger=client.logger,
        ),
        authorize=identity.authorize(),
        signing_secret=secret,
        # Socket Mode alone has no signing secret; bolt skips verification there anyway.
        request_verification_enabled=secret is not None,
        # Bolt answers when the listener returns, which a guarded listener does right after
        # its ack (bot/slack/guard.py); with False bolt would poll for the ack every 10 ms.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("slack_bolt"),
    )
    access = core.access_for(SlackDirectory(client, identity))
    ctx = SlackContext(
        settings=settings,
        client=client,
        dispatcher=Dispatcher(core, access, scheduler),
        app=app,
    )
    app.middleware(_DropRedeliveries(_SeenEvents(EVENT_DEDUPE_SECONDS)))
    # Bolt tries listeners in this order, each check costing some of the ack's time: the
    # frequent ones (buttons, commands) first.
    confirm_buttons.register(app, ctx)
    commands.register(app, ctx)
    restore_modal.register(app, ctx)
    holds.register(app, ctx)
    home.register(app, ctx)

    @app.event("subteam_members_changed")
    async def on_group_change() -> None:
        access.forget_groups()

    return ctx
