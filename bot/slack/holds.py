"""Before-change holds in Slack: the "Verified / Restore" prompt to the snapshot's creator, and
its reminder every 24 h until answered."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import messages
from bot.grammar import Restore
from bot.slack import restore_modal
from bot.slack.blocks import Block, sections
from bot.slack.context import SlackContext, actor_from
from bot.slack.guard import Kind, guarded
from bot.slack.webhooks import response_url_client
from core.domain.snapshot import Snapshot
from core.errors import CoreError

logger = logging.getLogger(__name__)

VERIFIED_ACTION = "snapbot_verified"
RESTORE_ACTION = "snapbot_hold_restore"


def prompt_blocks(text: str, snapshot: Snapshot) -> list[Block]:
    value = f"{snapshot.vm_name}\n{snapshot.label}"
    return [
        *sections(text),
        {
            "type": "actions",
            "block_id": "hold",
            "elements": [
                {
                    "type": "button",
                    "action_id": VERIFIED_ACTION,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": messages.VERIFIED_BUTTON},
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": RESTORE_ACTION,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": messages.RESTORE_BUTTON},
                    "value": value,
                },
            ],
        },
    ]


def register(app: AsyncApp, ctx: SlackContext) -> None:
    @app.action(VERIFIED_ACTION)
    @guarded(ctx, Kind.ACTION)
    async def on_verified(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        ctx.jobs.start("hold-verified", _verified(ctx, body))

    @app.action(RESTORE_ACTION)
    @guarded(ctx, Kind.ACTION)
    async def on_restore(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        vm, _, label = str((body.get("actions") or [{}])[0].get("value") or "").partition("\n")
        actor = actor_from(body)
        # The button's trigger id opens the same typed-name modal as /restore.
        try:
            await restore_modal.open_for_command(
                ctx,
                Restore(vm, label, safety_snapshot=True),
                actor,
                {
                    "trigger_id": body.get("trigger_id"),
                    "channel_id": actor.channel or "",
                    "team_id": actor.team or "",
                    "response_url": body.get("response_url"),
                },
            )
        except Exception:
            logger.exception("opening the restore modal from a hold prompt failed")


async def _verified(ctx: SlackContext, body: dict[str, Any]) -> None:
    actor = actor_from(body)
    vm, _, label = str((body.get("actions") or [{}])[0].get("value") or "").partition("\n")
    response_url = body.get("response_url")
    try:
        # Only the person who took it knows whether the change is good, or an admin: the hold
        # service decides, as for /snapshot release.
        released = await ctx.dispatcher.verified(vm, label, actor)
    except CoreError as exc:
        await ctx.tell(actor, messages.error_text(exc), response_url)
        return
    if response_url:
        await response_url_client(ctx.client, response_url).send(
            text=messages.verified(released, actor.user), replace_original=True
        )
    await ctx.changed()
