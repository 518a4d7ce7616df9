"""One Slack message per operation, edited as the operation moves through its stages.

Slack allows about one ``chat.update`` a second per message (Tier 3, shared by the whole app), so
edits are coalesced: a stage that arrives while an edit is in flight or too soon after the last
one only replaces the pending text, and the newest text is sent when the interval has passed.
A 429 is honoured by the client's retry handler (it sleeps ``Retry-After``); if Slack still
refuses, the pending text waits for the next interval instead of being lost. The final edit
always goes out.

When the bot cannot post in the channel (not invited to a private channel, DMs), the message
goes through the slash command's ``response_url`` instead, which allows five posts: there the
progress is cut to the first and the final text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.slack.webhooks import response_url_client
from core.domain.operation import Stage

logger = logging.getLogger(__name__)

MIN_EDIT_INTERVAL = 1.0
# Errors that mean "this bot cannot post here", not "Slack is failing".
_CANNOT_POST = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action"}


@dataclass(frozen=True, slots=True)
class Where:
    """Where a reply goes: a channel (and thread), with the response_url as the fallback."""

    channel: str
    response_url: str | None = None
    thread_ts: str | None = None


class LiveMessage:
    """A message that is posted once and then edited; see the module docstring."""

    def __init__(
        self,
        client: AsyncWebClient,
        where: Where,
        *,
        min_interval: float = MIN_EDIT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._where = where
        self._min_interval = min_interval
        self._clock = clock
        self.ts: str | None = None
        self.channel: str | None = None
        self._via_response_url = False
        self._pending: str | None = None
        self._last_sent_at = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def posted(self) -> bool:
        return self.ts is not None or self._via_response_url

    async def post(self, text: str) -> None:
        """Post the first version of the message (raises if Slack refuses)."""
        try:
            reply = await self._client.chat_postMessage(
                channel=self._where.channel, text=text, thread_ts=self._where.thread_ts
            )
        except SlackApiError as exc:
            if exc.response.get("error") not in _CANNOT_POST or not self._where.response_url:
                raise
            logger.info(
                "cannot post in %s (%s); replying through response_url",
                self._where.channel,
                exc.response.get("error"),
            )
            self._via_response_url = True
            await self._respond(text, replace=False)
        else:
            self.ts = str(reply["ts"])
            self.channel = str(reply["channel"])
        self._last_sent_at = self._clock()

    def update(self, text: str) -> None:
        """Show ``text``: posted or edited in the background within about ``min_interval``,
        coalesced with later texts. Never waits for Slack: the operation this message follows
        must not wait on a slow or rate-limited Slack between its stages."""
        if self._via_response_url:
            return  # five posts in all: keep them for the outcome
        self._pending = text
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="slack-edit")

    async def finish(self, text: str) -> None:
        """The final text: an edit of the message, or a new message if none could be posted."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._pending = None
        if self._via_response_url:
            await self._respond(text, replace=True)
            return
        if self.ts is None:
            await self.post(text)
            return
        async with self._lock:
            await self._edit(text, final=True)

    async def reply_in_thread(self, text: str) -> None:
        """A milestone under the message (a slow operation, a note for later readers)."""
        if self.ts is None or self.channel is None:
            return
        try:
            await self._client.chat_postMessage(channel=self.channel, thread_ts=self.ts, text=text)
        except SlackApiError as exc:
            logger.warning("thread reply failed: %s", exc.response.get("error"))

    async def _flush_soon(self) -> None:
        failed_posts = 0
        while self._pending is not None:
            wait = self._last_sent_at + self._min_interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._lock:
                text, self._pending = self._pending, None
                if text is None:
                    continue
                if not self.posted:
                    try:
                        await self.post(text)
                    except Exception:
                        failed_posts += 1
                        logger.warning("posting progress failed (%d)", failed_posts, exc_info=True)
                        if failed_posts >= 3:
                            return  # finish() tries once more with the outcome
                        self._pending = self._pending or text
                        self._last_sent_at = self._clock()
                    continue
                if not await self._edit(text, final=False):
                    # Refused (rate limited past the retries): keep the newest text for later.
                    self._pending = self._pending or text

    async def _edit(self, text: str, *, final: bool) -> bool:
        assert self.ts is not None
        assert self.channel is not None
        attempts = 3 if final else 1
        for attempt in range(attempts):
            try:
                await self._client.chat_update(channel=self.channel, ts=self.ts, text=text)
                self._last_sent_at = self._clock()
                return True
            except SlackApiError as exc:
                retry_after = _retry_after(exc)
                logger.warning(
                    "chat.update refused (%s)%s",
                    exc.response.get("error"),
                    f"; retrying in {retry_after} s" if attempt + 1 < attempts else "",
                )
                if attempt + 1 < attempts:
                    await asyncio.sleep(retry_after)
        return False

    async def _respond(self, text: str, *, replace: bool) -> None:
        assert self._where.response_url is not None
        webhook = response_url_client(self._client, self._where.response_url)
        response = await webhook.send(
            text=text, response_type="in_channel", replace_original=replace
        )
        if response.status_code != 200:
            logger.warning("response_url answered %s: %s", response.status_code, response.body)


def _retry_after(exc: SlackApiError) -> float:
    headers = getattr(exc.response, "headers", {}) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(1.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


class OperationProgress:
    """The live message of one operation: stages with their times, the elapsed time refreshed
    while a stage runs, a thread note when it runs long, and the outcome as the final edit."""

    def __init__(
        self,
        message: LiveMessage,
        title: str,
        *,
        slow_after: float,
        tick_every: float = 10.0,
    ) -> None:
        self._message = message
        self._title = title
        self._slow_after = slow_after
        self._tick_every = tick_every
        self._started = time.monotonic()
        self._stage_started = self._started
        self._done: list[tuple[Stage, float]] = []
        self._current: Stage | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def posted(self) -> bool:
        """Has a stage started (so the message belongs in the channel)?"""
        return self._current is not None

    async def stage(self, stage: Stage) -> None:
        """A ``ProgressCallback`` for the services; returns at once. The message appears at the
        first stage, so a request refused before any work (bad name, busy VM) is answered
        privately instead."""
        now = time.monotonic()
        if self._current is not None:
            self._done.append((self._current, now - self._stage_started))
        self._current, self._stage_started = stage, now
        self._message.update(self._render())
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="slack-progress-tick")

    async def finish(self, outcome: str) -> None:
        """The outcome: the last edit of the live message, or a new message if no stage ran
        (an operation without stages, such as a rename)."""
        if self._current is None:
            await self._message.post(outcome)
            return
        await self._stop_ticker()
        # Fast stages may have been coalesced away; the final text keeps their record.
        now = time.monotonic()
        stages = [*self._done, (self._current, now - self._stage_started)]
        await self._message.finish(f"{outcome}\n{messages.stage_summary(stages)}")

    async def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def _render(self) -> str:
        now = time.monotonic()
        current = None if self._current is None else (self._current, now - self._stage_started)
        return messages.progress_text(self._title, self._done, current, now - self._started)

    async def _tick(self) -> None:
        noted = False
        while True:
            await asyncio.sleep(self._tick_every)
            self._message.update(self._render())
            elapsed = time.monotonic() - self._started
            if not noted and elapsed >= self._slow_after:
                noted = True
                stage = self._current
                await self._message.reply_in_thread(messages.slow_operation(elapsed, stage))
