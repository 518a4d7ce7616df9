"""``/snapshot drill`` in Slack: a live message while the restore point is restored and booted,
ending with the drill's report (pass or fail, the point's age, time until ready, what went
wrong, the VM's owner mentioned), and the restored VM's console screenshot in its thread.

The report is the live message itself, so it reaches the channel even when the picture cannot
be uploaded (the files API refused, or the VM had no display)."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot import messages
from bot.dispatch import DrillView
from bot.grammar import RunDrill
from bot.slack.context import SlackContext
from bot.slack.files import Picture, UploadFailed, post_picture
from bot.slack.progress import LiveMessage, OperationProgress, Where
from core.domain.operation import Actor
from core.errors import CoreError, HypervisorError

logger = logging.getLogger(__name__)


async def run_drill(ctx: SlackContext, command: RunDrill, actor: Actor, where: Where) -> None:
    title = messages.drill_title(command.vm, command.label, actor.user)
    message = LiveMessage(ctx.client, where)
    progress = OperationProgress(
        message,
        title,
        slow_after=ctx.settings.slow_operation_seconds,
        tick_every=ctx.settings.progress_refresh_seconds,
    )
    try:
        outcome = await ctx.dispatcher.handle(command, actor, progress.stage)
    except CoreError as exc:
        # Refused before any stage (no such VM, no signal configured, a drill running): told
        # privately, like every refusal; once the live message is up, the failure goes there.
        if isinstance(exc, HypervisorError):
            logger.warning("%s failed: %s", title, exc)
        text = messages.error_text(exc)
        if progress.posted:
            await progress.finish(messages.failed_text(title, text))
        else:
            await ctx.tell(actor, text, where.response_url)
        return
    finally:
        await ctx.changed()
    assert isinstance(outcome, DrillView)
    drilled = outcome.outcome
    await progress.finish(messages.drill_report(drilled))
    shot = drilled.drill.screenshot
    if shot is None:
        return
    picture = Picture(
        shot,
        filename=f"snapbot-drill-{drilled.drill.vm_name}-{drilled.drill.id}.png",
        title=messages.SCREENSHOT_TITLE,
        alt=messages.screenshot_alt(drilled),
    )
    try:
        await post_picture(
            ctx.client,
            where.channel,
            messages.screenshot_caption(drilled),
            picture,
            thread_ts=message.ts,
        )
    except SlackApiError as exc:
        problem = str(exc.response.get("error"))
        logger.warning("drill screenshot not posted in %s: %s", where.channel, problem)
        await ctx.tell(actor, messages.screenshot_not_posted(problem), where.response_url)
    except UploadFailed as exc:
        logger.warning("drill screenshot not uploaded: %s", exc)
        await ctx.tell(actor, messages.screenshot_not_posted(str(exc)), where.response_url)
