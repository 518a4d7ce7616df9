"""How Slack reaches the app: HTTP (``POST /slack/events``) and/or Socket Mode, both inside
snapbot's own event loop (bolt's ``app.start()`` would take the loop over).

Socket Mode connections die quietly at times (bolt-python#417, python-slack-sdk#1110): a
watchdog checks the connection and replaces the whole client when it stays down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import METRICS_PATH, Metrics
from bot.slack.jobs import SlackRequests

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"


@web.middleware
async def _whole_second_timestamps(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Slack signs with a timestamp in whole seconds. Anything else is a forged or broken
    request: refused like one (401), before slack_sdk's verifier, which does int() on it
    unguarded and would answer 500 with a traceback anyone could trigger."""
    stamp = request.headers.get("X-Slack-Request-Timestamp")
    whole_seconds = stamp is None or (stamp.isascii() and stamp.isdigit())
    if request.path == EVENTS_PATH and not whole_seconds:
        return web.Response(status=401)
    return await handler(request)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _counting(requests: SlackRequests) -> Middleware:
    """Count each Slack request from its arrival to its answer, so that background jobs hold
    back until the acks of a burst are out (``Jobs``)."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != EVENTS_PATH:
            return await handler(request)
        requests.begin()
        try:
            return await handler(request)
        finally:
            requests.end()

    return count


class HttpTransport:
    """bolt's aiohttp application on ``host:port``, plus ``GET /healthz`` and, given
    ``metrics``, ``GET /metrics``. Given ``requests`` (the app's ``ctx.jobs.requests``), every
    Slack request is counted there while it is answered."""

    def __init__(
        self,
        app: AsyncApp,
        *,
        host: str = "0.0.0.0",
        port: int = 3000,
        metrics: Metrics | None = None,
        requests: SlackRequests | None = None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._requests = requests
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def web_application(self) -> web.Application:
        application = self._app.web_app(path=EVENTS_PATH, port=self._port)
        if self._requests is not None:
            # First: a request refused by the next middleware is in flight too until answered.
            application.middlewares.append(_counting(self._requests))
        application.middlewares.append(_whole_second_timestamps)
        application.router.add_get(HEALTH_PATH, self._health)
        if self._metrics is not None:
            application.router.add_get(METRICS_PATH, self._metrics.handle)
        return application

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def start(self) -> None:
        self._runner = web.AppRunner(self.web_application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        logger.info("listening for Slack on %s:%s%s", self._host, self.port, EVENTS_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class SocketModeTransport:
    """A Socket Mode connection kept alive by a watchdog."""

    def __init__(
        self,
        app: AsyncApp,
        app_token: str,
        client: AsyncWebClient,
        *,
        check_every: float = 10.0,
        dead_after: float = 30.0,
        ping_interval: float = 5.0,
    ) -> None:
        self._app = app
        self._app_token = app_token
        self._client = client
        self._check_every = check_every
        self._dead_after = dead_after
        # The SDK notices a silent peer after about two ping intervals (its default is 10 s).
        self._ping_interval = ping_interval
        self._handler: AsyncSocketModeHandler | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.reconnects = 0

    def _new_handler(self) -> AsyncSocketModeHandler:
        return AsyncSocketModeHandler(
            self._app,
            app_token=self._app_token,
            web_client=self._client,
            ping_interval=self._ping_interval,
        )

    async def start(self) -> None:
        self._handler = self._new_handler()
        await self._handler.connect_async()  # type: ignore[no-untyped-call]
        self._watchdog = asyncio.create_task(self._watch(), name="socket-mode-watchdog")

    async def is_connected(self) -> bool:
        return self._handler is not None and await self._handler.client.is_connected()

    async def _watch(self) -> None:
        down_since: float | None = None
        while True:
            await asyncio.sleep(self._check_every)
            try:
                connected = await self.is_connected()
            except Exception:
                logger.exception("socket mode health check failed")
                connected = False
            if connected:
                down_since = None
                continue
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since < self._dead_after:
                continue
            # The SDK's own reconnect did not bring it back: start over with a fresh client.
            logger.warning("socket mode down for %.0f s; reconnecting", now - down_since)
            await self._replace_handler()
            down_since = None

    async def _replace_handler(self) -> None:
        old = self._handler
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close_async()  # type: ignore[no-untyped-call]
        self._handler = self._new_handler()
        try:
            await self._handler.connect_async()  # type: ignore[no-untyped-call]
            self.reconnects += 1
        except Exception:
            logger.exception("socket mode reconnect failed; retrying at the next check")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._handler is not None:
            with contextlib.suppress(Exception):
                await self._handler.close_async()  # type: ignore[no-untyped-call]
