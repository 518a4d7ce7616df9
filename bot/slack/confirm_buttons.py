"""The Confirm / Cancel buttons under a delete or prune preview.

The button's value is the stored confirmation's id. Claiming it is a compare-and-set, so a
double click, a replayed request or a click by someone else runs nothing a second time; those
get a private answer saying why.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import messages
from bot.slack import blocks
from bot.slack.context import SlackContext, actor_from
from bot.slack.guard import Kind, guarded
from bot.slack.progress import Where
from bot.slack.webhooks import response_url_client
from core.domain.confirmation import ArchiveRequest, Confirmation, DeleteRequest
from core.domain.operation import Actor, ProgressCallback
from core.errors import CoreError


def register(app: AsyncApp, ctx: SlackContext) -> None:
    @app.action(blocks.CONFIRM_ACTION)
    @guarded(ctx, Kind.ACTION)
    async def on_confirm(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        ctx.jobs.start("confirm", _confirm(ctx, body))

    @app.action(blocks.CANCEL_ACTION)
    @guarded(ctx, Kind.ACTION)
    async def on_cancel(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        ctx.jobs.start("cancel", _cancel(ctx, body))


def _confirmation_id(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


async def _replace_preview(ctx: SlackContext, body: dict[str, Any], text: str) -> None:
    """Turn the preview (and its buttons) into a plain note, so it cannot be clicked again."""
    url = body.get("response_url")
    if url:
        await response_url_client(ctx.client, url).send(text=text, replace_original=True)


def _title(confirmation: Confirmation, actor: Actor) -> str:
    vm = confirmation.vm_name or "all VMs"
    if isinstance(confirmation.request, DeleteRequest):
        label = confirmation.request.label
        return messages.operation_title("Delete", vm, label, by=actor.user)
    if isinstance(confirmation.request, ArchiveRequest):
        label = confirmation.request.label
        return messages.operation_title("Archive", vm, label, by=actor.user)
    return messages.operation_title("Prune", vm, by=actor.user)


async def _confirm(ctx: SlackContext, body: dict[str, Any]) -> None:
    actor = actor_from(body)
    response_url = body.get("response_url")
    try:
        confirmation = await ctx.dispatcher.claim(_confirmation_id(body), actor)
    except CoreError as exc:
        await ctx.tell(actor, messages.error_text(exc), response_url)
        return
    await _replace_preview(ctx, body, messages.confirmed_by(actor.user, confirmation.kind.value))
    where = Where(channel=actor.channel or actor.user, response_url=response_url)

    async def work(progress: ProgressCallback) -> str:
        return await ctx.dispatcher.run_confirmed(confirmation, actor, progress)

    await ctx.run_operation(actor, where, _title(confirmation, actor), work, public_errors=True)


async def _cancel(ctx: SlackContext, body: dict[str, Any]) -> None:
    actor = actor_from(body)
    try:
        text = await ctx.dispatcher.cancel(_confirmation_id(body), actor)
    except CoreError as exc:
        await ctx.tell(actor, messages.error_text(exc), body.get("response_url"))
        return
    await _replace_preview(ctx, body, text)
