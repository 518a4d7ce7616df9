"""The last resort around every Slack listener: whatever a payload holds, Slack gets its ack and
the person an answer.

An exception that escapes a bolt listener before its ``ack()`` makes bolt answer Slack with an
error (the user sees "dispatch_failed" or "We had some trouble connecting"); one after the ack is
only logged, and the person hears nothing. Here both become a logged error with a reference id,
and the person is told that reference: in the ack when it has not been sent yet, privately
otherwise.

Bolt answers Slack when the listener returns (``process_before_response``, bolt/app.py): a
guarded listener returns as soon as it has acked, its remainder (anything it does after the
ack) running on as a tracked job, and an event's listener (bolt acks events itself) runs wholly
as a job. So the HTTP answer leaves the moment the ack is made, and nothing after an ack can
delay it or turn it into an error.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages
from bot.slack import blocks
from bot.slack.context import SlackContext, actor_from

logger = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[None]]


class Kind(enum.Enum):
    """What the ack may carry: a slash command's ack carries text, a view submission's a view
    (``response_action``), a button's nothing; events are acknowledged by bolt itself."""

    COMMAND = "command"
    VIEW = "view"
    ACTION = "action"
    EVENT = "event"


class _Ack:
    """Bolt's ``ack``, remembering whether it was called (an ack is sent once) and telling
    ``answered`` once bolt holds the response."""

    def __init__(self, ack: Callable[..., Awaitable[Any]], answered: asyncio.Future[None]) -> None:
        self._ack = ack
        self._answered = answered
        self.sent = False

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.sent = True
        try:
            return await self._ack(*args, **kwargs)
        finally:
            _settle(self._answered)


def _settle(answered: asyncio.Future[None]) -> None:
    if not answered.done():
        answered.set_result(None)


def guarded(ctx: SlackContext, kind: Kind) -> Callable[[Listener], Listener]:
    """Wrap a listener (bolt reads the wrapped function's parameter names through
    ``functools.wraps``, so it keeps injecting ``ack``, ``body``, ``event``...)."""

    def wrap(listener: Listener) -> Listener:
        name = f"slack-{kind.value}-{listener.__name__}"

        async def call(ack: _Ack | None, kwargs: dict[str, Any]) -> None:
            try:
                await listener(**kwargs)
            except Exception:
                reference = uuid.uuid4().hex[:8]
                logger.exception(
                    "Slack %s listener %s failed (reference %s)",
                    kind.value,
                    listener.__name__,
                    reference,
                )
                await _answer(ctx, kind, ack, kwargs.get("body"), reference)

        @functools.wraps(listener)
        async def run(**kwargs: Any) -> None:
            if "ack" not in kwargs:
                # An event: bolt acks it when this returns; the listener is the work after it.
                ctx.jobs.start(name, call(None, kwargs))
                return
            answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ack = _Ack(kwargs["ack"], answered)
            kwargs["ack"] = ack
            # Not held back: the ack itself waits for what the listener does before it.
            task = ctx.jobs.start(name, call(ack, kwargs), hold=False)
            task.add_done_callback(lambda _: _settle(answered))
            # Shielded: if the HTTP request is dropped, the listener still runs to its end.
            await asyncio.shield(answered)

        return run

    return wrap


async def _answer(
    ctx: SlackContext, kind: Kind, ack: _Ack | None, body: object, reference: str
) -> None:
    text = messages.internal_error(reference)
    try:
        if ack is not None and not ack.sent:
            if kind is Kind.COMMAND:
                await ack(text=text)
                return
            if kind is Kind.VIEW:
                await ack(response_action="update", view=blocks.notice_view(text))
                return
            await ack()
        if kind is Kind.EVENT or not isinstance(body, dict):
            return
        actor = actor_from(body)
        if actor.user not in ("", "None"):  # "None": the payload named nobody to tell
            await ctx.tell(actor, text, body.get("response_url"))
    except Exception:
        logger.exception("could not tell anyone about failure %s", reference)
