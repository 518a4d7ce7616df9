"""The App Home tab: the VMs the user may act on, their snapshots, storage totals.

Published when the user opens the tab and again after every operation (for everyone who opened
it recently), so it never shows a snapshot that was just deleted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.slack import blocks
from bot.slack.context import SlackContext
from bot.slack.guard import Kind, guarded
from core.domain.operation import Actor
from core.domain.snapshot import CatalogueStatus
from core.domain.usage import UsageReport
from core.errors import CoreError
from core.services.snapshots import VmSnapshots

logger = logging.getLogger(__name__)


def register(app: AsyncApp, ctx: SlackContext) -> None:
    @app.event("app_home_opened")
    @guarded(ctx, Kind.EVENT)
    async def on_home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        user = str(event["user"])
        ctx.home_viewers.add(user)
        await publish(ctx, user)

    async def refresh_all() -> None:
        # One listing (it syncs every VM with libvirt) and one usage measurement serve every
        # viewer's tab.
        groups = await ctx.dispatcher.listing()
        # Measuring usage reads the store's accounting: only when someone will read it.
        usage = await _usage(ctx) if ctx.home_viewers else None
        for user in list(ctx.home_viewers):
            await publish(ctx, user, groups, usage)

    ctx.on_change.append(refresh_all)


async def _usage(ctx: SlackContext) -> UsageReport | None:
    """The host's storage usage; None (the tab shows the rest) when it cannot be measured."""
    try:
        return await ctx.dispatcher.usage_report()
    except CoreError as exc:
        logger.warning("usage for the Home tab not measured: %s", exc)
        return None


async def _drills(ctx: SlackContext, actor: Actor) -> str | None:
    """Each VM's last passing restore drill (None: no drills here, or none visible)."""
    try:
        statuses = await ctx.dispatcher.drill_status(actor)
    except CoreError as exc:
        logger.warning("drills for the Home tab not read: %s", exc)
        return None
    if not statuses:
        return None
    return messages.drill_status(statuses, datetime.now(UTC))


async def publish(
    ctx: SlackContext,
    user: str,
    groups: Sequence[VmSnapshots] | None = None,
    usage: UsageReport | None = None,
) -> None:
    """Build and publish ``user``'s Home tab (from ``groups`` and ``usage`` when already
    measured)."""
    actor = Actor(user=user, via="slack")
    if groups is None:
        groups = await ctx.dispatcher.listing()
        usage = await _usage(ctx)
    mine = await ctx.dispatcher.visible_groups(actor, groups)
    present = [s for g in mine for s in g.snapshots if s.status is CatalogueStatus.PRESENT]
    header = messages.home_header(
        vm_count=sum(1 for g in mine if g.vm is not None),
        snapshot_count=len(present),
        disk_bytes=sum(g.disk_bytes or 0 for g in mine),
        memory_bytes=sum(s.memory_bytes or 0 for s in present),
    )
    if not mine:
        header = messages.home_nothing_visible()
    elif usage is not None:
        summary = messages.usage_summary(await ctx.dispatcher.visible_usage(actor, usage))
        header = f"{header}\n{summary}"
    drills = await _drills(ctx, actor)
    if drills is not None:
        header = f"{header}\n{drills}"
    hosts = ctx.dispatcher.hosts()
    several = bool(messages.listed_hosts(hosts))
    if several and not mine and not any(h.reachable for h in hosts):
        header = ""  # no host answers: what is known is which, since when and why
    if several:
        # Which hosts the VMs below are on, and which cannot be shown because they are down.
        counts = Counter(g.vm.host for g in mine if g.vm is not None and g.vm.host is not None)
        header = f"{header}\n{messages.hosts_summary(hosts, dict(counts))}".strip()
    try:
        await ctx.client.views_publish(
            user_id=user, view=blocks.home_view(header, mine, with_host=several)
        )
    except SlackApiError as exc:
        logger.warning("views.publish for %s failed: %s", user, exc.response.get("error"))
