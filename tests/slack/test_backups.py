"""Incremental snapshots through Slack: the reply says what was read and stored, listings
show the type, restore as a copy through the typed-name modal, verify reports damage in the
channel, archive asks for Confirm first."""

from __future__ import annotations

from pathlib import Path

from bot.slack import blocks
from core.adapters.backupstore import DirectoryBackupStore
from core.domain.snapshot import SnapshotKind
from core.domain.vm import VmState
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess
from tests.slack.harness import ADMIN, CHANNEL, OPERATOR, RESTORER, SlackBot, confirm_value
from tests.slack.test_confirmations import open_restore_modal

WEB = "11111111-1111-1111-1111-111111111111"
MIB = 1024 * 1024


def name_typed(name: str) -> dict[str, dict[str, dict[str, object]]]:
    return {blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": name}}}


async def _done(bot: SlackBot, starts: str) -> str:
    final = await bot.slack.wait_for_message(
        lambda m: m.text.startswith(("✅", "❌")) and starts in m.text, channel=CHANNEL, timeout=15
    )
    return final.text


async def test_an_incremental_reply_says_what_was_read_and_new_and_the_listing_shows_types(
    bot: SlackBot, services: Services, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, b"x" * (3 * MIB))
    await services.service.create_snapshot("web-01", "internal", actor=ALICE)
    answer = await bot.command("/snapshot web-01 nightly --incremental", user=OPERATOR)
    assert answer.status == 200
    assert answer.seconds < 1.0
    text = await _done(bot, "Incremental snapshot")
    assert text.startswith("✅ *Incremental snapshot* web-01 `nightly` by <@U_OPS>"), text
    assert "read 4.0 MiB, 4.0 MiB new to the backup store" in text
    assert "stored in the backup store in " in text
    assert "crash-consistent: no guest agent answered" in text.lower()
    assert "Reading disks into the backup store" in text, "the stage is shown"

    listing = await bot.command("/snapshot list web-01", user=OPERATOR)
    reply = await bot.slack.wait_until(lambda: bot.slack.responses(listing.response_url))
    shown = reply[0].text or ""
    assert "incremental disk" in shown
    assert "logical 16.0 MiB · added 4.0 MiB" in shown
    assert "full disk+memory" in shown


async def test_restore_as_a_copy_asks_for_the_new_name_and_leaves_the_copy_shut_off(
    bot: SlackBot, services: Services, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, b"keep" * 1024)
    await bot.command("/snapshot web-01 point --incremental", user=OPERATOR)
    await _done(bot, "Incremental snapshot")

    view = await open_restore_modal(bot, "/restore web-01 point --as web-01-copy", RESTORER)
    shown = str(view["blocks"])
    assert "define a new VM web-01-copy" in shown
    assert "new UUID, new MAC addresses" in shown
    assert "left shut off" in shown
    ids = [b.get("block_id") for b in view["blocks"]]  # type: ignore[attr-defined]
    assert blocks.SAFETY_BLOCK not in ids, "no safety snapshot: no VM is changed"

    answer = await bot.submit(view, name_typed("web-01"), user=RESTORER)
    assert answer["response_action"] == "errors"
    assert "web-01-copy" in answer["errors"][blocks.CONFIRM_BLOCK]
    assert "web-01-copy" not in {v.name for v in await services.hv.list_vms()}

    assert await bot.submit(view, name_typed("web-01-copy"), user=RESTORER) is None
    text = await _done(bot, "Restore as web-01-copy")
    assert "New VM web-01-copy defined from `point` of web-01" in text, text
    copy = await services.hv.get_vm("web-01-copy")
    assert copy.state is VmState.SHUT_OFF
    assert fake_disks.read(copy.uuid, 0, 4) == b"keep"
    original = await services.hv.get_vm("web-01")
    assert original.state is VmState.RUNNING


async def test_a_restorer_cannot_create_a_copy_outside_the_vms_granted(
    bot: SlackBot, services: Services, fake_disks: FakeDiskAccess
) -> None:
    await bot.command("/snapshot web-01 point --incremental", user=OPERATOR)
    await _done(bot, "Incremental snapshot")
    await bot.command("/restore web-01 point --as db-copy", user=RESTORER)  # restorer on web-*
    await bot.slack.wait_until(
        lambda: next(
            (v for v in bot.slack.views.values() if "needs the *restorer* role" in str(v)), None
        ),
        what="a refusal in the modal",
    )
    assert "db-copy" not in {v.name for v in await services.hv.list_vms()}


async def test_verify_reports_damage_in_the_channel_naming_the_affected_snapshots(
    bot: SlackBot, fake_disks: FakeDiskAccess, backup_store: DirectoryBackupStore
) -> None:
    fake_disks.write(WEB, 0, b"y" * MIB)
    for label in ("one", "two"):
        await bot.command(f"/snapshot web-01 {label} --incremental", user=OPERATOR)
        await _done(bot, f"`{label}`")
    clean = await bot.command("/snapshot verify web-01", user=OPERATOR)
    assert clean.status == 200
    text = await _done(bot, "Verify backups")
    assert "Verified 2 restore point(s)" in text
    assert "Everything is intact" in text

    _flip_a_byte_in_every_chunk(backup_store.root)
    await bot.command("/snapshot verify", user=OPERATOR)
    text = await _done(bot, "all VMs")
    assert "⚠️ 1 piece(s) damaged or missing" in text, text
    assert "web-01 `one`" in text
    assert "web-01 `two`" in text
    assert "The next incremental snapshot of each affected VM stores a damaged piece again" in text

    listing = await bot.command("/snapshot list web-01", user=OPERATOR)
    reply = await bot.slack.wait_until(lambda: bot.slack.responses(listing.response_url))
    assert (reply[0].text or "").count("DAMAGED") == 2


async def test_archive_shows_what_is_lost_and_runs_on_confirm(
    bot: SlackBot, services: Services, fake_disks: FakeDiskAccess
) -> None:
    await services.service.create_snapshot("web-01", "old", actor=ALICE)
    refused = await bot.command("/snapshot archive web-01 old", user=OPERATOR)
    reply = await bot.slack.wait_until(lambda: bot.slack.responses(refused.response_url))
    assert "needs the *admin* role" in (reply[0].text or "")

    answer = await bot.command("/snapshot archive web-01 old", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    text = preview[0].text or ""
    assert "Archive snapshot `old` of web-01?" in text
    assert "memory state" in text
    assert "is not kept" in text
    (snap,) = await services.catalogue.snapshots(WEB)
    assert snap.kind is SnapshotKind.FULL, "nothing happens before Confirm"
    value = confirm_value(preview[0].blocks)
    await bot.click(blocks.CONFIRM_ACTION, value, user=ADMIN, response_url=answer.response_url)
    done = await _done(bot, "Archive")
    assert "Archived `old` of web-01" in done, done
    (snap,) = await services.catalogue.snapshots(WEB)
    assert snap.kind is SnapshotKind.ARCHIVED


def _flip_a_byte_in_every_chunk(root: Path) -> None:
    for chunk in (root / ".chunks").rglob("*"):
        if chunk.is_file() and len(chunk.name) == 64:
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0xFF
            chunk.write_bytes(bytes(data))


async def test_a_deleted_vm_is_picked_and_defined_again_from_slack(
    bot: SlackBot, services: Services, fake_disks: FakeDiskAccess
) -> None:
    fake_disks.write(WEB, 0, b"mine" * 1024)
    await bot.command("/snapshot web-01 before-delete --incremental", user=OPERATOR)
    await _done(bot, "Incremental snapshot")
    await services.service.create_snapshot("web-01", "internal-only", actor=ALICE)
    del services.hv.vms[WEB]  # undefined, and its disk deleted
    fake_disks.disk(WEB).unlink()

    await bot.command("/restore web-01", user=ADMIN)
    picker = await bot.slack.wait_until(
        lambda: next(
            (v for v in bot.slack.views.values() if v.get("callback_id") == blocks.PICK_CALLBACK),
            None,
        ),
        what="the picker",
    )
    options = str(picker["blocks"])
    assert "before-delete" in options
    assert "internal-only" not in options, "an internal snapshot died with the VM's image"
    answer = await bot.submit(
        picker,
        {blocks.PICK_BLOCK: {blocks.PICK_INPUT: {"selected_option": {"value": "before-delete"}}}},
        user=ADMIN,
    )
    assert answer["response_action"] == "update"
    view = await bot.slack.wait_until(
        lambda: next(
            (
                v
                for v in bot.slack.views.values()
                if v.get("callback_id") == blocks.RESTORE_CALLBACK
            ),
            None,
        ),
        what="the confirmation",
    )
    assert "web-01 no longer exists. This will define it again" in str(view["blocks"])
    assert await bot.submit(view, name_typed("web-01"), user=ADMIN) is None
    text = await _done(bot, "Restore")
    assert "web-01 is defined again from `before-delete`" in text, text
    back = await services.hv.get_vm("web-01")
    assert back.uuid == WEB
    assert fake_disks.read(WEB, 0, 4) == b"mine"
