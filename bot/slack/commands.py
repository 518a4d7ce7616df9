"""The slash commands: ``/snapshot``, ``/restore`` and ``/prune`` (names configurable).

Every command is acknowledged at once; grammar errors and help are answered in the ack itself
(parsing is pure and fast), everything else runs as a background job after the ack.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.dispatch import (
    PROGRESSING,
    ConfirmArchive,
    ConfirmDelete,
    ConfirmPrune,
    ConfirmUnlock,
    Reply,
    UsageView,
)
from bot.grammar import (
    Command,
    CreateSnapshot,
    Help,
    Prune,
    RenameSnapshot,
    Restore,
    RunDrill,
    UsageError,
    VerifyBackups,
    parse,
)
from bot.mrkdwn import decode_slack
from bot.slack import blocks, holds, restore_modal
from bot.slack.context import SlackContext, actor_from
from bot.slack.drills import run_drill
from bot.slack.files import Picture, UploadFailed, post_picture
from bot.slack.guard import Kind, guarded
from bot.slack.progress import Where
from core.domain.operation import Actor, ProgressCallback
from core.errors import CoreError

logger = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[None]]


def register(app: AsyncApp, ctx: SlackContext) -> None:
    for canonical, name in ctx.settings.commands.items():
        app.command(name)(guarded(ctx, Kind.COMMAND)(_listener(ctx, canonical)))


def localise(text: str, ctx: SlackContext) -> str:
    """Usage texts name the default commands; show the names this workspace uses."""
    for canonical, name in ctx.settings.commands.items():
        if name != f"/{canonical}":
            text = text.replace(f"/{canonical}", name)
    return text


def _listener(ctx: SlackContext, canonical: str) -> Listener:
    async def on_command(ack: AsyncAck, body: dict[str, Any]) -> None:
        try:
            # Decoded once, here: the grammar and the catalogue see what the person typed.
            command = parse(canonical, decode_slack(str(body.get("text") or "")))
        except UsageError as exc:
            await ack(text=localise(messages.usage_error_text(exc), ctx))
            return
        if isinstance(command, Help):
            await ack(text=localise(messages.help_text(command.command), ctx))
            return
        actor = actor_from(body)
        response_url = body.get("response_url")
        if isinstance(command, Restore):
            await ack()
            # The trigger id expires 3 s after Slack sent it: open the modal before anything
            # slow (libvirt, the database), then fill it in. Nothing may raise out of a
            # listener right after its ack: bolt 1.30 then drops the ack (404 to Slack).
            try:
                await restore_modal.open_for_command(ctx, command, actor, body)
            except Exception:
                logger.exception("opening the restore modal failed")
            return
        await ack()

        async def on_crash(reference: str) -> None:
            await ctx.tell(actor, messages.internal_error(reference), response_url)

        ctx.jobs.start(
            f"{canonical}-{actor.user}",
            _run(ctx, command, actor, body),
            on_crash=on_crash,
        )

    return on_command


async def _run(ctx: SlackContext, command: Command, actor: Actor, body: dict[str, Any]) -> None:
    response_url = body.get("response_url")
    where = Where(channel=str(body.get("channel_id")), response_url=response_url)
    if isinstance(command, RunDrill):
        await run_drill(ctx, command, actor, where)
        return
    if isinstance(command, PROGRESSING):

        async def work(progress: ProgressCallback) -> str:
            outcome = await ctx.dispatcher.handle(command, actor, progress)
            assert isinstance(outcome, Reply)
            return outcome.text

        await ctx.run_operation(actor, where, _title(command, actor), work)
        if isinstance(command, CreateSnapshot) and command.hold:
            await _prompt_verification(ctx, command, actor)
        return
    try:
        outcome = await ctx.dispatcher.handle(command, actor)
    except CoreError as exc:
        await ctx.tell(actor, localise(messages.error_text(exc), ctx), response_url)
        return
    if isinstance(outcome, Reply):
        await ctx.tell(actor, localise(outcome.text, ctx), response_url)
    elif isinstance(outcome, UsageView):
        await _post_usage(ctx, actor, body, outcome)
    elif isinstance(outcome, ConfirmUnlock):
        text = messages.unlock_preview(outcome.preview)
        await _send_preview(
            ctx, actor, response_url, text, outcome.confirmation.id, messages.CONFIRM_BUTTON
        )
    elif isinstance(outcome, ConfirmArchive):
        text = messages.archive_prompt(outcome.snapshot)
        await _send_preview(
            ctx, actor, response_url, text, outcome.confirmation.id, messages.CONFIRM_BUTTON
        )
    elif isinstance(outcome, ConfirmDelete):
        text = messages.delete_prompt(outcome.snapshot, outcome.reclaim)
        await _send_preview(
            ctx, actor, response_url, text, outcome.confirmation.id, messages.CONFIRM_BUTTON
        )
    elif isinstance(outcome, ConfirmPrune):
        dry_run = outcome.confirmation is None
        text = messages.prune_preview(outcome.preview, dry_run=dry_run, reclaim=outcome.reclaim)
        if outcome.confirmation is None:
            assert isinstance(command, Prune)
            note = messages.prune_nothing_confirmed(dry_run=command.dry_run)
            await ctx.tell(actor, f"{text}\n{note}", response_url)
        else:
            await _send_preview(
                ctx, actor, response_url, text, outcome.confirmation.id, messages.CONFIRM_BUTTON
            )
    else:  # pragma: no cover - restore is handled by the modal
        logger.error("unexpected outcome %r", outcome)


async def _post_usage(
    ctx: SlackContext, actor: Actor, body: dict[str, Any], view: UsageView
) -> None:
    """The report in the channel it was asked in, the chart under it (a file cannot be shown
    to one person only); privately, without the chart, when it cannot go there."""
    text = localise(messages.usage_report(view.report), ctx)
    response_url = body.get("response_url")
    if view.chart is None:
        note = f"\n{view.chart_note}" if view.chart_note else ""
        await ctx.tell(actor, text + note, response_url)
        return
    subject = view.report.vm or "host"
    picture = Picture(
        view.chart,
        filename=f"snapbot-usage-{subject}.png",
        title=messages.CHART_TITLE,
        alt=messages.chart_alt(view.report),
    )
    try:
        await post_picture(ctx.client, str(body.get("channel_id")), text, picture)
    except SlackApiError as exc:
        problem = str(exc.response.get("error"))
        logger.warning("usage chart not posted in %s: %s", body.get("channel_id"), problem)
        await ctx.tell(actor, f"{text}\n{messages.chart_not_posted(problem)}", response_url)
    except UploadFailed as exc:
        logger.warning("usage chart not uploaded: %s", exc)
        await ctx.tell(actor, f"{text}\n{messages.chart_not_posted(str(exc))}", response_url)


async def _prompt_verification(ctx: SlackContext, command: CreateSnapshot, actor: Actor) -> None:
    """A before-change snapshot: ask its creator, privately, to verify the change later."""
    try:
        snapshot = await ctx.dispatcher.snapshot(command.vm, command.label)
    except CoreError:
        return  # the snapshot was not taken; its failure was already reported
    if snapshot.hold is None:
        return
    text = messages.verify_prompt(snapshot)
    await ctx.client.chat_postMessage(
        channel=actor.user, text=text, blocks=holds.prompt_blocks(text, snapshot)
    )


async def _send_preview(
    ctx: SlackContext,
    actor: Actor,
    response_url: str | None,
    text: str,
    confirmation_id: str,
    button: str,
) -> None:
    """A preview only the requester sees, with Confirm / Cancel."""
    message_blocks = blocks.confirm_message(text, confirmation_id, danger_label=button)
    await ctx.tell(actor, text, response_url, blocks=message_blocks)


def _title(command: Command, actor: Actor) -> str:
    if isinstance(command, CreateSnapshot):
        action = "Incremental snapshot" if command.incremental else "Snapshot"
        return messages.operation_title(action, command.vm, command.label, by=actor.user)
    if isinstance(command, VerifyBackups):
        return messages.operation_title(
            "Verify backups", command.vm or "all VMs", command.label, by=actor.user
        )
    assert isinstance(command, RenameSnapshot)
    return messages.operation_title("Rename", command.vm, command.old_label, by=actor.user)
