"""The Slack front end end to end on the real QEMU guest: slash commands over signed HTTP, the
typed-name modal (the guest's counter proves the restore), a prune preview then Confirm, and
refusals by role."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bot.slack import blocks
from bot.slack.transport import SocketModeTransport
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock
from core.config import Settings
from core.domain.snapshot import Origin
from tests.conftest import ALICE
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeMessage, FakeSlack
from tests.slack.harness import ADMIN, CHANNEL, OPERATOR, SECRET, VIEWER, SlackBot, running_bot
from tests.slack.test_confirmations import typed
from tests.system.conftest import TEST_URI, Guest, RealCore
from tests.system.guest.guest import read_counter_lines, wait_for_counter, wait_for_restored_count

pytestmark = pytest.mark.system


@pytest.fixture
async def slack_bot(real: RealCore, tmp_path: object) -> AsyncIterator[SlackBot]:
    settings = Settings(
        libvirt_uri=TEST_URI,
        libvirt_uri_explicit=True,
        data_dir=tmp_path,  # type: ignore[arg-type]
        database_url="sqlite://:memory:",
    )
    core: Core = wire(settings, real.hv, real.catalogue, SystemClock(), libvirt_uri=TEST_URI)
    async with FakeSlack() as slack, running_bot(core, slack) as bot:
        yield bot


async def finished(bot: SlackBot, needle: str) -> str:
    return (await finished_message(bot, needle)).text


async def finished_message(bot: SlackBot, needle: str) -> FakeMessage:
    message = await bot.slack.wait_for_message(
        lambda m: needle in m.text and m.text.startswith(("✅", "❌")), channel=CHANNEL, timeout=90
    )
    assert message.text.startswith("✅"), message.text
    return message


async def test_snapshot_then_restore_through_the_modal_brings_the_counter_back(
    slack_bot: SlackBot, guest: Guest
) -> None:
    bot = slack_bot
    await asyncio.to_thread(
        wait_for_counter,
        guest.serial_log,
        after_offset=0,
        timeout=60,
        predicate=lambda c: c.mem >= 2,
    )
    answer = await bot.command(f"/snapshot {guest.name} before-upgrade", user=OPERATOR)
    assert answer.status == 200
    assert answer.seconds < 3.0
    text = await finished(bot, "before-upgrade")
    assert "disk + memory + configuration" in text
    mark = read_counter_lines(guest.serial_log)[-1].mem
    await asyncio.to_thread(
        wait_for_counter,
        guest.serial_log,
        after_offset=0,
        timeout=60,
        predicate=lambda c: c.mem >= mark + 3,
    )

    # a viewer cannot restore: the modal says which role is missing
    await bot.command(f"/restore {guest.name} before-upgrade", user=VIEWER)
    await bot.slack.wait_until(
        lambda: next((v for v in bot.slack.views.values() if "*restorer* role" in str(v)), None)
    )

    await bot.command(f"/restore {guest.name} before-upgrade", user=ADMIN)
    view = await bot.slack.wait_until(
        lambda: next(
            (
                v
                for v in bot.slack.views.values()
                if v.get("callback_id") == blocks.RESTORE_CALLBACK
            ),
            None,
        )
    )
    wrong = await bot.submit(view, typed(guest.name.upper()), user=ADMIN)
    assert wrong["response_action"] == "errors"
    assert read_counter_lines(guest.serial_log)[-1].mem > mark, "nothing restored yet"

    offset = guest.log_size()
    assert await bot.submit(view, typed(guest.name), user=ADMIN) is None
    message = await finished_message(bot, "restored to `before-upgrade`")
    assert "Safety snapshot of the state before" in message.text
    history = bot.slack.history(CHANNEL, message.ts)
    assert any("Replacing disk · Restoring memory" in t for t in history), history
    # memory came back to the snapshot: the count went back, in the same boot
    back = await asyncio.to_thread(
        wait_for_restored_count, guest.serial_log, after_offset=offset, at_most=mark + 2
    )
    assert back.boot == read_counter_lines(guest.serial_log)[0].boot
    assert back.disk == back.mem - 1, "the disk came back with it"


async def test_prune_preview_then_confirm_deletes_in_libvirt(
    slack_bot: SlackBot, real: RealCore, guest: Guest
) -> None:
    bot = slack_bot
    for n in range(3):
        await real.service.create_snapshot(
            guest.name, f"nightly-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )
    answer = await bot.command(f"/prune {guest.name} --keep-last 1", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    assert "DELETE nightly-0" in (preview[0].text or "")
    vm = await real.hv.get_vm(guest.name)
    assert len(await real.hv.list_snapshots(vm)) == 3, "nothing deleted before Confirm"
    value = next(
        e["value"] for b in preview[0].blocks or [] if b["type"] == "actions" for e in b["elements"]
    )
    await bot.click(blocks.CONFIRM_ACTION, value, user=ADMIN, response_url=answer.response_url)
    text = await finished(bot, "Prune finished")
    assert "deleted 2" in text
    names = {s.description for s in await real.hv.list_snapshots(vm)}
    assert len(names) == 1
    assert "nightly-2" in next(iter(names))

    forged = req.slash_command_body(
        "/prune", f"{guest.name} --keep-last 1", response_url="http://x", trigger_id="t"
    )
    status, _, _ = await bot.post(forged, req.sign(SECRET + "x", forged))
    assert status == 401
    stale = req.sign(SECRET, forged, timestamp=int(time.time()) - 301)
    status, _, _ = await bot.post(forged, stale)
    assert status == 401


async def test_socket_mode_envelope_snapshots_the_guest(slack_bot: SlackBot, guest: Guest) -> None:
    bot = slack_bot
    socket = SocketModeTransport(bot.ctx.app, "xapp-1-test", bot.ctx.client, ping_interval=1)
    await socket.start()
    try:
        await bot.slack.wait_for_socket()
        payload = req.slash_command_payload(
            "/snapshot",
            f"{guest.name} via-socket",
            response_url=bot.slack.new_response_url(),
            trigger_id=bot.slack.new_trigger_id(),
            user_id=OPERATOR,
        )
        ack = await bot.slack.send_envelope("slash_commands", payload)
        assert ack["envelope_id"]
        text = await finished(bot, "via-socket")
        assert "disk + memory + configuration" in text
    finally:
        await socket.stop()
