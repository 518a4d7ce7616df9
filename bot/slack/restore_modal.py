"""``/restore``: the typed-name confirmation modal (and the snapshot picker before it).

The modal opens at once with a loading view (a trigger id lives 3 s and libvirt may be slow),
then is filled in. Submitting checks the typed name inside the modal (``response_action:
errors``); a correct submission claims the stored confirmation, so a double submission or a
replayed request restores once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.dispatch import ConfirmRestore, PickSnapshot
from bot.grammar import Restore
from bot.slack import blocks
from bot.slack.context import SlackContext, actor_from
from bot.slack.guard import Kind, guarded
from bot.slack.progress import Where
from core.domain.confirmation import RestoreRequest
from core.domain.operation import Actor, ProgressCallback
from core.errors import ConfirmationSpent, CoreError

logger = logging.getLogger(__name__)


def register(app: AsyncApp, ctx: SlackContext) -> None:
    @app.view(blocks.RESTORE_CALLBACK)
    @guarded(ctx, Kind.VIEW)
    async def on_restore_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        await _submit_restore(ctx, ack, body)

    @app.view_closed(blocks.RESTORE_CALLBACK)
    @guarded(ctx, Kind.ACTION)
    async def on_restore_closed(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        meta = _metadata(body)
        ctx.jobs.start("restore-closed", _cancel(ctx, meta.get("id", ""), _actor(body, meta)))

    @app.view(blocks.PICK_CALLBACK)
    @guarded(ctx, Kind.VIEW)
    async def on_pick_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        meta = _metadata(body)
        picked = _input(body, blocks.PICK_BLOCK, blocks.PICK_INPUT)
        label = str((picked.get("selected_option") or {}).get("value") or "")
        view_id = str((body.get("view") or {}).get("id") or "")
        if not meta.get("vm") or not view_id:
            unknown = blocks.notice_view(messages.restore_request_unknown())
            await ack(response_action="update", view=unknown)
            return
        await ack(response_action="update", view=blocks.loading_view())
        actor = _actor(body, meta)
        command = Restore(
            meta["vm"], label, meta.get("safety") != "off", as_name=meta.get("as") or None
        )
        ctx.jobs.start(
            f"restore-pick-{actor.user}",
            _fill(ctx, view_id, command, actor, meta),
        )


async def _cancel(ctx: SlackContext, confirmation_id: str, actor: Actor) -> None:
    # Already used or expired: nothing to cancel.
    with contextlib.suppress(ConfirmationSpent):
        await ctx.dispatcher.cancel(confirmation_id, actor)


async def open_for_command(
    ctx: SlackContext, command: Restore, actor: Actor, body: dict[str, Any]
) -> None:
    """Open the loading modal on the slash command's trigger, then fill it in the background."""
    response_url = body.get("response_url")
    try:
        opened = await ctx.client.views_open(
            trigger_id=str(body.get("trigger_id")), view=blocks.loading_view()
        )
    except SlackApiError as exc:
        error = exc.response.get("error")
        logger.warning("views.open failed: %s", error)
        await ctx.tell(actor, messages.modal_failed(str(error)), response_url)
        return
    meta = {
        "channel": str(body.get("channel_id") or ""),
        "response_url": str(response_url or ""),
        "team": str(body.get("team_id") or ""),
    }
    ctx.jobs.start(
        f"restore-open-{actor.user}",
        _fill(ctx, str(opened["view"]["id"]), command, actor, meta),
    )


async def _fill(
    ctx: SlackContext, view_id: str, command: Restore, actor: Actor, meta: dict[str, str]
) -> None:
    try:
        outcome = await ctx.dispatcher.handle(command, actor)
    except CoreError as exc:
        view = blocks.notice_view(messages.modal_refusal(messages.error_text(exc)))
        await ctx.client.views_update(view_id=view_id, view=view)
        return
    if isinstance(outcome, PickSnapshot):
        if not outcome.vm.snapshots:
            view = blocks.notice_view(messages.pick_snapshot(outcome.vm))
        else:
            safety = "on" if outcome.safety_snapshot else "off"
            picked = {**meta, "vm": outcome.vm.vm_name, "safety": safety}
            if outcome.as_name is not None:
                picked["as"] = outcome.as_name
            view = blocks.pick_view(outcome.vm, picked)
        await ctx.client.views_update(view_id=view_id, view=view)
        return
    assert isinstance(outcome, ConfirmRestore)
    metadata = {**meta, "id": outcome.confirmation.id}
    await ctx.client.views_update(
        view_id=view_id,
        view=blocks.restore_view(
            outcome.preview, metadata, outcome.safety_snapshot, outcome.typed_name
        ),
    )


async def _submit_restore(ctx: SlackContext, ack: AsyncAck, body: dict[str, Any]) -> None:
    meta = _metadata(body)
    typed = str(_input(body, blocks.CONFIRM_BLOCK, blocks.CONFIRM_INPUT).get("value") or "")
    selected = _input(body, blocks.SAFETY_BLOCK, blocks.SAFETY_INPUT).get("selected_options")
    safety = any(
        isinstance(o, dict) and o.get("value") == blocks.SAFETY_VALUE for o in selected or []
    )
    confirmation = await ctx.dispatcher.confirmation(meta.get("id", ""))
    if confirmation is None or confirmation.vm_name is None:
        await ack(
            response_action="errors",
            errors={blocks.CONFIRM_BLOCK: messages.restore_request_unknown()},
        )
        return
    request = confirmation.request
    vm = confirmation.vm_name
    # A copy or a deleted VM defined again: the name typed is the VM that will exist.
    expected = request.typed_name if isinstance(request, RestoreRequest) else vm
    if typed != expected:
        await ack(
            response_action="errors",
            errors={blocks.CONFIRM_BLOCK: messages.typed_name_error(expected)},
        )
        return
    await ack()
    actor = _actor(body, meta)
    label = request.label if isinstance(request, RestoreRequest) else ""
    title = messages.operation_title("Restore", vm, label, by=actor.user)
    if isinstance(request, RestoreRequest) and request.as_name is not None:
        title = messages.operation_title(f"Restore as {request.as_name}", vm, label, by=actor.user)
    where = Where(
        channel=meta.get("channel") or actor.user, response_url=meta.get("response_url") or None
    )

    async def work(progress: ProgressCallback) -> str:
        return await ctx.dispatcher.confirm(
            confirmation.id, actor, progress, safety_snapshot=safety
        )

    ctx.jobs.start(f"restore-{expected}", ctx.run_operation(actor, where, title, work))


def _input(body: dict[str, Any], block: str, action: str) -> dict[str, Any]:
    """One input's state in a view payload; empty when the payload lacks it (a payload is input
    like any other: it is read, never trusted to have every key)."""
    view = body.get("view") or {}
    values = (view.get("state") or {}).get("values") or {}
    found = (values.get(block) or {}).get(action)
    return found if isinstance(found, dict) else {}


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    try:
        raw = json.loads(body["view"].get("private_metadata") or "{}")
    except (json.JSONDecodeError, KeyError):
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _actor(body: dict[str, Any], meta: dict[str, str]) -> Actor:
    """A view payload has no channel: it travels in the modal's metadata."""
    base = actor_from(body)
    return Actor(
        user=base.user,
        via=base.via,
        team=base.team or meta.get("team") or None,
        channel=meta.get("channel") or None,
    )
