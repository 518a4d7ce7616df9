"""The App Home tab: the VMs the user may act on, their newest snapshots, storage totals.

Published when the user opens the tab and again after every operation (for everyone who opened
it recently), so it never shows a snapshot that was just deleted. It is built from the core's
read model (``Dispatcher.overview``, ``core.services.overview``): the catalogue's counts, the
newest snapshots of only the VMs shown, and storage as last sampled, with its day. So
an opening costs a few catalogue queries and one VM listing however big the fleet, and no
libvirt call per VM (issue 12).

Refreshes after operations are coalesced: while one runs, the operations ending meanwhile share
one more (it starts after the running one, so it sees all of them); a schedule ending a
thousand operations does not queue a thousand rebuilds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.slack import blocks
from bot.slack.context import SlackContext
from bot.slack.guard import Kind, guarded
from core.domain.operation import Actor
from core.domain.vm import Vm
from core.errors import CoreError
from core.services.overview import StorageGlance, VmOverview

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
        await publish_all(ctx, sorted(ctx.home_viewers))

    ctx.on_change.append(Coalesced(refresh_all))


class Coalesced:
    """Calls of ``work`` coalesced: at most one runs and one waits. A call while one runs
    waits for the next run, which starts after the running one ends (so it sees whatever
    made the caller call); callers arriving before that next run starts share it."""

    def __init__(self, work: Callable[[], Awaitable[None]]) -> None:
        self._work = work
        self._running: asyncio.Task[None] | None = None
        self._pending: asyncio.Task[None] | None = None
        self.runs = 0

    async def __call__(self) -> None:
        if self._pending is None:
            self._pending = asyncio.create_task(self._after(self._running))
        # Shielded: a caller cancelled while waiting does not cancel the run others share.
        await asyncio.shield(self._pending)

    async def _after(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        # From here on this run may already have read the state: later callers need another.
        self._running, self._pending = self._pending, None
        try:
            self.runs += 1
            await self._work()
        finally:
            if self._running is asyncio.current_task():
                self._running = None


@dataclass(frozen=True, slots=True)
class _Page:
    """One person's Home tab before its VMs' newest snapshots are read."""

    user: str
    header: str
    shown: list[VmOverview]
    more: int
    with_host: bool


async def publish(ctx: SlackContext, user: str) -> None:
    """Build and publish ``user``'s Home tab."""
    await publish_all(ctx, [user])


async def publish_all(ctx: SlackContext, users: Sequence[str]) -> None:
    """Build and publish each of ``users``' Home tabs from one overview, one storage
    measurement and one read of the newest snapshots of every VM any of them is shown."""
    if not users:
        return
    vms = await ctx.dispatcher.overview()
    storage = await ctx.dispatcher.home_storage()
    pages = [await _page(ctx, user, vms, storage) for user in users]
    wanted = {vm.vm_uuid: vm for page in pages for vm in page.shown}
    newest = {vm.vm_uuid: vm for vm in await ctx.dispatcher.with_newest(list(wanted.values()))}
    for page in pages:
        shown = [newest.get(vm.vm_uuid, vm) for vm in page.shown]
        view = blocks.home_view(page.header, shown, with_host=page.with_host, more=page.more)
        try:
            await ctx.client.views_publish(user_id=page.user, view=view)
        except SlackApiError as exc:
            logger.warning("views.publish for %s failed: %s", page.user, exc.response.get("error"))


async def _page(
    ctx: SlackContext, user: str, vms: Sequence[VmOverview], storage: StorageGlance | None
) -> _Page:
    actor = Actor(user=user, via="slack")
    mine = await ctx.dispatcher.visible_overview(actor, vms)
    disk = storage.disk_bytes(v.vm_uuid for v in mine) if storage is not None else None
    memory = sum(v.tally.memory_bytes for v in mine)
    header = messages.home_header(
        vm_count=sum(1 for v in mine if v.vm is not None),
        snapshot_count=sum(v.tally.present for v in mine),
        disk_bytes=disk,
        memory_bytes=memory,
    )
    if not mine:
        header = messages.home_nothing_visible()
    elif storage is not None and disk is not None:
        whole_host = len(mine) == len(vms)
        lines = messages.home_storage(
            storage, disk_bytes=disk, memory_bytes=memory, whole_host=whole_host
        )
        header = f"{header}\n{lines}"
    else:
        header = f"{header}\n{messages.home_not_sampled()}"
    drills = await _drills(ctx, actor, [v.vm for v in vms if v.vm is not None])
    if drills is not None:
        header = f"{header}\n{drills}"
    hosts = ctx.dispatcher.hosts()
    several = bool(messages.listed_hosts(hosts))
    if several and not mine and not any(h.reachable for h in hosts):
        header = ""  # no host answers: what is known is which, since when and why
    if several:
        # Which hosts the VMs below are on, and which cannot be shown because they are down.
        counts = Counter(v.vm.host for v in mine if v.vm is not None and v.vm.host is not None)
        header = f"{header}\n{messages.hosts_summary(hosts, dict(counts))}".strip()
    room = blocks.home_capacity(header)
    return _Page(user, header, mine[:room], max(0, len(mine) - room), several)


async def _drills(ctx: SlackContext, actor: Actor, vms: Sequence[Vm]) -> str | None:
    """Each VM's last passing restore drill (None: no drills here, or none visible), of the
    VMs the overview listed (no listing of its own per viewer)."""
    try:
        statuses = await ctx.dispatcher.drill_status(actor, vms)
    except CoreError as exc:
        logger.warning("drills for the Home tab not read: %s", exc)
        return None
    if not statuses:
        return None
    return messages.drill_status(statuses, datetime.now(UTC))
