"""The App Home tab at scale (issue 12): an opening reads the catalogue's summary and one VM
listing, never each VM from libvirt; refreshes after a burst of operations are coalesced; what
an operation deleted is gone from the refreshed tab."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.slack import blocks
from bot.slack.home import Coalesced
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.slack.harness import ADMIN, RESTORER, SlackBot, confirm_value

# Every read of the hypervisor a listing could make, VM by VM or all at once.
READS = (
    "list_vms",
    "get_vm",
    "get_vm_by_uuid",
    "vm_facts",
    "list_snapshots",
    "memory_state_sizes",
    "disk_allocation",
    "snapshot_places",
    "state",
    "job_active",
    "host_of",
)


def home_text(bot: SlackBot, user: str = ADMIN) -> str:
    return str(bot.slack.home_views.get(user, {}).get("blocks"))


def counting(services: Services, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the fake hypervisor's reads from now on."""
    calls: Counter[str] = Counter()
    for name in READS:
        original = getattr(services.hv, name)

        def wrapped(
            *args: Any, _name: str = name, _original: Callable[..., Awaitable[Any]] = original
        ) -> Awaitable[Any]:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(services.hv, name, wrapped)
    return calls


async def opened(bot: SlackBot, user: str = ADMIN) -> str:
    bot.slack.home_views.pop(user, None)
    status, _, _ = await bot.signed(req.app_home_opened_event_body(user))
    assert status == 200
    await bot.slack.wait_until(lambda: bot.slack.home_views.get(user), what="the Home tab")
    return home_text(bot, user)


async def test_opening_home_lists_the_vms_once_and_reads_no_vm_from_libvirt(
    bot: SlackBot, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        await services.service.create_snapshot("web-01", f"s-{n:02}", actor=ALICE)
    assert bot.core.usage is not None
    await bot.core.usage.sample_today()

    calls = counting(services, monkeypatch)
    text = await opened(bot)
    assert calls == Counter({"list_vms": 1}), "one listing of the VMs, nothing VM by VM"
    # The same tab as ever: the newest 10, the rest counted, storage with its day.
    assert "*web-01* (running)" in text
    assert "*db-01* (shut off)" in text
    assert all(f"`s-{n:02}`" in text for n in range(2, 12))
    assert "`s-01`" not in text
    assert text.index("`s-11`") < text.index("`s-02`"), "newest first"
    assert "… and 2 older (/snapshot list web-01)" in text
    assert "*web-02* (running)\\nno snapshots" in text
    assert "12 snapshot(s)" in text
    assert "Storage as sampled on" in text
    calls.clear()
    await opened(bot)
    assert calls == Counter({"list_vms": 1})


async def test_storage_on_home_is_cut_to_the_vms_the_person_sees(
    bot: SlackBot, services: Services
) -> None:
    assert bot.core.usage is not None
    await bot.core.usage.sample_today()
    everything = await opened(bot)
    assert "disk images 30.0 MiB" in everything
    assert "/var/lib/fake: " in everything
    mine = await opened(bot, RESTORER)
    assert "disk images 20.0 MiB" in mine, "web-01 and web-02, not db-01"
    assert "/var/lib/fake" not in mine, "the samples do not say whose disks are there"


async def test_a_snapshot_deleted_by_an_operation_is_gone_from_the_refreshed_tab(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "doomed", actor=ALICE)
    await services.service.create_snapshot("web-01", "kept", actor=ALICE)
    assert "`doomed`" in await opened(bot)
    published = len(bot.slack.calls_to("views.publish"))

    answer = await bot.command("/snapshot delete web-01 doomed", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    value = confirm_value(preview[0].blocks)
    await bot.click(blocks.CONFIRM_ACTION, value, user=ADMIN, response_url=answer.response_url)
    await bot.slack.wait_for_message(lambda m: m.text.startswith("✅"), timeout=15)
    await bot.idle()
    assert len(bot.slack.calls_to("views.publish")) > published, "the tab was refreshed"
    text = home_text(bot)
    assert "`doomed`" not in text
    assert "`kept`" in text


async def test_a_burst_of_operations_ending_rebuilds_the_tab_at_most_twice(
    bot: SlackBot, services: Services
) -> None:
    await opened(bot)
    refresh = next(h for h in bot.ctx.on_change if isinstance(h, Coalesced))
    before = refresh.runs
    published = len(bot.slack.calls_to("views.publish"))
    # A schedule over many VMs: each operation tells the tab as it ends, all at once.
    await asyncio.gather(*(bot.ctx.changed() for _ in range(200)))
    assert refresh.runs - before <= 2
    assert len(bot.slack.calls_to("views.publish")) - published <= 2


async def test_a_refresh_asked_for_while_one_runs_runs_after_it_and_sees_the_change() -> None:
    state = {"value": 0}
    seen: list[int] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def rebuild() -> None:
        read = state["value"]  # a rebuild reads the state first, then takes its time
        started.set()
        await release.wait()
        seen.append(read)

    refresh = Coalesced(rebuild)
    first = asyncio.create_task(refresh())
    await started.wait()
    state["value"] = 1  # changed after the running rebuild read it
    waiting = [asyncio.create_task(refresh()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert seen == [0, 1], "one more rebuild, after the running one, saw the change"
    assert refresh.runs == 2
