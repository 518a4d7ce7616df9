"""Where the scheduler's reports and reminders go in Slack."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import date, datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.slack.blocks import sections
from bot.slack.files import Picture, UploadFailed, post_picture
from bot.slack.holds import prompt_blocks
from core.domain.operation import Operation
from core.domain.snapshot import Snapshot
from core.domain.usage import Forecast, UsageReport
from core.services.drills import DrillStatus
from core.services.reports import Digest, RunReport

logger = logging.getLogger(__name__)

SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


class SlackReporter:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def run_report(self, report: RunReport) -> None:
        channel = report.schedule.channel or report.schedule.owner
        text = messages.run_report(report)
        try:
            await self._client.chat_postMessage(
                channel=channel, text=text[:3900], blocks=sections(text)
            )
        except SlackApiError as exc:
            # A report that cannot reach its channel goes to the schedule's owner instead.
            logger.warning("report to %s failed: %s", channel, exc.response.get("error"))
            fallback = messages.report_undeliverable(channel, str(exc.response.get("error")))
            await self._client.chat_postMessage(
                channel=report.schedule.owner, text=f"{fallback}\n{text}"[:3900]
            )

    async def hold_reminder(self, snapshot: Snapshot) -> None:
        if not SLACK_USER.match(snapshot.created_by):
            # Taken from the console or by a schedule: there is nobody in Slack to ask.
            logger.info("no Slack user to remind about %s", snapshot.label)
            return
        text = messages.hold_reminder(snapshot)
        await self._client.chat_postMessage(
            channel=snapshot.created_by, text=text, blocks=prompt_blocks(text, snapshot)
        )

    async def reconciled(self, operations: Sequence[Operation]) -> None:
        """The final word on operations a crash or a dead replica interrupted, to whoever
        asked, where they asked."""
        for op in operations:
            if not SLACK_USER.match(op.requested_by):
                continue  # a console or scheduler request: its outcome is in the audit trail
            text = messages.reconciled_notice(op)
            try:
                await self._client.chat_postMessage(
                    channel=op.channel or op.requested_by, text=text[:3900], blocks=sections(text)
                )
            except SlackApiError as exc:
                logger.warning(
                    "final word on %s to %s failed: %s",
                    op.id,
                    op.channel,
                    exc.response.get("error"),
                )

    async def digest(self, digest: Digest) -> None:
        text = messages.digest_text(digest)
        await self._client.chat_postMessage(
            channel=digest.channel, text=text[:3900], blocks=sections(text)
        )

    async def usage_report(self, channel: str, report: UsageReport, chart: bytes | None) -> None:
        """The weekly storage report, its chart under it."""
        text = messages.weekly_usage_report(report)
        if chart is not None:
            picture = Picture(
                chart,
                filename=f"snapbot-usage-{report.taken_at.date().isoformat()}.png",
                title=messages.CHART_TITLE,
                alt=messages.chart_alt(report),
            )
            try:
                await post_picture(self._client, channel, text, picture)
                return
            except SlackApiError as exc:
                problem = str(exc.response.get("error"))
            except UploadFailed as exc:
                problem = str(exc)
            logger.warning("weekly usage chart not posted in %s: %s", channel, problem)
            text = f"{text}\n{messages.chart_not_posted(problem)}"
        await self._client.chat_postMessage(
            channel=channel, text=text[:3900], blocks=sections(text)
        )

    async def drills_overdue(
        self, channel: str, statuses: Sequence[DrillStatus], now: datetime
    ) -> None:
        """The weekly report's flag: VMs without a passing restore drill in 35 days."""
        text = messages.drills_overdue(statuses, now)
        if text is None:
            return
        await self._client.chat_postMessage(
            channel=channel, text=text[:3900], blocks=sections(text)
        )

    async def fill_warning(self, channel: str, forecasts: Sequence[Forecast], today: date) -> None:
        text = messages.fill_warning(tuple(forecasts), today)
        await self._client.chat_postMessage(
            channel=channel, text=text[:3900], blocks=sections(text)
        )
