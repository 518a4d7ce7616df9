"""What every Slack surface shares: the services, the client, background jobs, and the one way
an operation is shown (a live message in the channel, its outcome as the last edit)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import messages
from bot.dispatch import Dispatcher
from bot.slack.blocks import sections
from bot.slack.jobs import Jobs
from bot.slack.progress import LiveMessage, OperationProgress, Where
from bot.slack.webhooks import response_url_client
from core.config import SlackSettings
from core.domain.operation import Actor, ProgressCallback
from core.errors import CoreError, HypervisorError

logger = logging.getLogger(__name__)

# Slack's message text limit; longer content goes in blocks.
TEXT_LIMIT = 3900

# Run an operation given a progress callback; return the outcome text.
Work = Callable[[ProgressCallback], Awaitable[str]]


def actor_from(body: dict[str, Any]) -> Actor:
    """Who is asking, from a slash command body or an interaction payload."""
    if "user_id" in body:  # slash command
        return Actor(
            user=str(body["user_id"]),
            via="slack",
            team=body.get("team_id"),
            channel=body.get("channel_id"),
            enterprise=body.get("enterprise_id") or None,
        )
    user = body.get("user") or {}
    # The user's own workspace first: in a Slack Connect channel ``team`` is the channel's
    # host, and a user of another organisation must be judged by theirs.
    team = user.get("team_id") or (body.get("team") or {}).get("id")
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    enterprise = (body.get("enterprise") or {}).get("id") or user.get("enterprise_id")
    return Actor(
        user=str(user.get("id")), via="slack", team=team, channel=channel, enterprise=enterprise
    )


K = TypeVar("K")
V = TypeVar("V")


class _Shared(Generic[K, V]):
    """One call per key at a time: callers asking for a key already being fetched share that
    call's answer (or its error; nothing is kept after it ends). A burst of 50 requests right
    after start would otherwise make 50 identical Web API calls."""

    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(fetch())
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # Shielded: one caller giving up does not cancel the others' answer.
        return await asyncio.shield(pending)


class SlackIdentity:
    """Who the bot is and where (``auth.test``), asked once and kept; concurrent askers share
    the one call, and a failure is asked again next time."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._reply: AsyncSlackResponse | None = None
        self._shared: _Shared[str, AsyncSlackResponse] = _Shared()

    async def auth_test(self) -> AsyncSlackResponse:
        if self._reply is None:
            self._reply = await self._shared.get("auth.test", self._client.auth_test)
        return self._reply

    @property
    def token(self) -> str | None:
        return self._client.token

    def authorize(self) -> _IdentityAuthorize:
        """Bolt's authorization from the kept answer (bolt's own single-workspace one calls
        auth.test for every request until the first answer arrives, on the ack's path)."""
        return _IdentityAuthorize(self)


class _IdentityAuthorize(AsyncAuthorize):
    def __init__(self, identity: SlackIdentity) -> None:
        self._identity = identity

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        reply = await self._identity.auth_test()
        token = self._identity.token
        # What bolt's single-workspace authorization gives for a bot token.
        return AuthorizeResult(
            enterprise_id=reply.get("enterprise_id"),
            team_id=reply.get("team_id"),
            bot_id=reply.get("bot_id"),
            bot_user_id=reply.get("user_id"),
            bot_token=token,
            user_id=user_id,
            bot_scopes=reply.headers.get("x-oauth-scopes"),
        )


class SlackDirectory:
    """User-group membership from Slack, for ``AccessService``."""

    def __init__(self, client: AsyncWebClient, identity: SlackIdentity | None = None) -> None:
        self._client = client
        self._identity = identity if identity is not None else SlackIdentity(client)
        self._home: tuple[str | None, str | None] | None = None
        self._members: _Shared[str, AsyncSlackResponse] = _Shared()

    async def members(self, usergroup: str) -> Collection[str]:
        try:
            reply = await self._members.get(
                usergroup, lambda: self._client.usergroups_users_list(usergroup=usergroup)
            )
        except SlackApiError as exc:
            raise CoreError(f"usergroups.users.list: {exc.response.get('error')}") from exc
        return [str(u) for u in reply.get("users") or []]

    async def home(self) -> tuple[str | None, str | None]:
        if self._home is None:
            try:
                reply = await self._identity.auth_test()
            except SlackApiError as exc:
                # Not known yet: every request is refused until it is (deny by default).
                raise CoreError(f"auth.test: {exc.response.get('error')}") from exc
            self._home = (
                str(reply.get("team_id") or "") or None,
                str(reply.get("enterprise_id") or "") or None,
            )
        return self._home


@dataclass
class SlackContext:
    settings: SlackSettings
    client: AsyncWebClient
    dispatcher: Dispatcher
    app: AsyncApp
    jobs: Jobs = field(default_factory=Jobs)
    # Users who opened the Home tab: their view is refreshed after each operation.
    home_viewers: set[str] = field(default_factory=set)
    on_change: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def run_operation(
        self, actor: Actor, where: Where, title: str, work: Work, *, public_errors: bool = False
    ) -> None:
        """Run ``work`` with a live message in ``where.channel``: posted when the first stage
        starts, edited as stages pass, ending with the outcome. A request refused before any
        stage (bad name, busy VM, no right) is answered privately to ``actor`` instead, unless
        ``public_errors`` (a confirmed action whose requester already left the dialog)."""
        message = LiveMessage(self.client, where)
        progress = OperationProgress(
            message,
            title,
            slow_after=self.settings.slow_operation_seconds,
            tick_every=self.settings.progress_refresh_seconds,
        )
        try:
            outcome = await work(progress.stage)
        except CoreError as exc:
            if isinstance(exc, HypervisorError):
                logger.warning("%s failed: %s", title, exc)
            text = messages.error_text(exc)
            if progress.posted or public_errors:
                await progress.finish(messages.failed_text(title, text))
            else:
                await self.tell(actor, text, where.response_url)
        except Exception:
            if progress.posted:
                await progress.finish(messages.failed_text(title, messages.internal_error("log")))
            raise
        else:
            await progress.finish(messages.done_text(title, outcome))
        finally:
            await self.changed()

    async def changed(self) -> None:
        """Something may have changed: refresh what shows state (the Home tabs)."""
        for hook in self.on_change:
            try:
                await hook()
            except Exception:
                logger.exception("refresh after an operation failed")

    async def tell(
        self,
        actor: Actor,
        text: str,
        response_url: str | None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> None:
        """A private note to the person who asked: through the response_url when there is one,
        else an ephemeral message, else a DM."""
        if blocks is None and len(text) > TEXT_LIMIT:
            blocks = sections(text)  # a long listing travels as sections, cut at line ends
        text = text[:TEXT_LIMIT]
        if response_url:
            reply = await response_url_client(self.client, response_url).send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
            if reply.status_code == 200:
                return
        try:
            if actor.channel:
                await self.client.chat_postEphemeral(
                    channel=actor.channel, user=actor.user, text=text, blocks=blocks
                )
                return
        except SlackApiError as exc:
            logger.info("ephemeral failed (%s); sending a DM", exc.response.get("error"))
        await self.client.chat_postMessage(channel=actor.user, text=text, blocks=blocks)
