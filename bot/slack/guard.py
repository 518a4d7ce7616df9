"""The last resort around every Slack listener: whatever a payload holds, Slack gets its ack and
the person an answer.

An exception that escapes a bolt listener before its ``ack()`` makes bolt answer Slack with an
error (the user sees "dispatch_failed" or "We had some trouble connecting"); one after the ack is
only logged, and the person hears nothing. Here both become a logged error with a reference id,
and the person is told that reference: in the ack when it has not been sent yet, privately
otherwise.
"""

from __future__ import annotations

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
    """Bolt's ``ack``, remembering whether it was called (an ack is sent once)."""

    def __init__(self, ack: Callable[..., Awaitable[Any]]) -> None:
        self._ack = ack
        self.sent = False

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.sent = True
        return await self._ack(*args, **kwargs)


def guarded(ctx: SlackContext, kind: Kind) -> Callable[[Listener], Listener]:
    """Wrap a listener (bolt reads the wrapped function's parameter names through
    ``functools.wraps``, so it keeps injecting ``ack``, ``body``, ``event``...)."""

    def wrap(listener: Listener) -> Listener:
        @functools.wraps(listener)
        async def run(**kwargs: Any) -> None:
            ack = _Ack(kwargs["ack"]) if "ack" in kwargs else None
            if ack is not None:
                kwargs["ack"] = ack
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
