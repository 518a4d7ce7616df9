"""Storage usage in Slack: ``/snapshot usage`` with its chart, the Home tab's summary, the
weekly report and the warning that a filesystem is about to fill."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, date, datetime, timedelta

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.files import Picture, post_picture
from bot.slack.reports import SlackReporter
from core.domain.snapshot import Origin
from core.domain.usage import SampleKind, UsageSample
from core.services.usage import UsageService
from scheduler.service import UsageJobs
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeMessage, FakeSlack
from tests.slack.harness import ADMIN, RESTORER, SlackBot
from tests.unit.test_manifest import load as load_manifest

CHANNEL = "C0OPS"
DIGEST = "C0DIGEST"
GiB = 2**30
FAKE_PLACE = "/var/lib/fake"  # where the fake hypervisor keeps every VM's disks
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_png() -> bytes:
    """A valid 1x1 PNG (what the chart renderer's output is checked against elsewhere)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        PNG_MAGIC
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, each CRC checked: bytes that arrived whole."""
    assert data[:8] == PNG_MAGIC, "not a PNG"
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"chunk {kind!r} damaged"
        kinds.append(kind)
        at += 12 + length
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    return kinds


async def test_a_picture_is_uploaded_in_three_steps_and_shown_by_an_image_block(
    slack: FakeSlack,
) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    png = tiny_png()
    picture = Picture(png, "usage.png", "Storage usage", "a chart")

    file_id = await post_picture(client, CHANNEL, "*Storage usage*\nweb-01: 1.0 GiB", picture)

    methods = [c.method for c in slack.calls]
    assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert slack.calls[0].params["length"] == str(len(png))
    assert slack.file(file_id).data == png
    png_chunks(slack.file(file_id).data or b"")
    (message,) = slack.messages(CHANNEL)
    assert message.files == [file_id]
    assert message.images() == [file_id]
    assert "web-01: 1.0 GiB" in message.blocks[0]["text"]["text"]


async def test_an_image_block_of_a_file_shared_nowhere_is_refused(slack: FakeSlack) -> None:
    """Like Slack: a private upload is visible to its uploader only."""
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    png = tiny_png()
    reply = await client.files_getUploadURLExternal(filename="x.png", length=len(png))
    block = {"type": "image", "slack_file": {"id": reply["file_id"]}, "alt_text": "x"}
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x", blocks=[block])
    assert caught.value.response["error"] == "invalid_blocks"
    # Nor can an upload whose bytes never arrived be completed.
    with pytest.raises(SlackApiError) as caught:
        await client.files_completeUploadExternal(
            files=[{"id": reply["file_id"]}], channel_id=CHANNEL
        )
    assert caught.value.response["error"] == "file_not_found"


async def test_files_upload_v2_reaches_the_fake_too(slack: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    png = tiny_png()
    reply = await client.files_upload_v2(
        content=png, filename="c.png", channel=CHANNEL, initial_comment="the chart"
    )
    file_id = reply["file"]["id"]
    assert slack.file(file_id).data == png
    (message,) = slack.messages(CHANNEL)
    assert message.text == "the chart"
    assert message.files == [file_id]


async def shrinking(services: Services, *, free_now: int, per_day: int, days: int = 10) -> None:
    """``days`` daily samples of the fake's filesystem, ending today with ``free_now`` free."""
    today = datetime.now(UTC).date()
    await services.catalogue.record_usage(
        [
            UsageSample(
                day=today - timedelta(days=n),
                kind=SampleKind.FILESYSTEM,
                subject=FAKE_PLACE,
                name=FAKE_PLACE,
                used_bytes=None,
                free_bytes=free_now + n * per_day,
            )
            for n in range(days)
        ]
    )
    # Today's figure from "libvirt" agrees with the history.
    services.hv.free_bytes = free_now


def usage_of(bot: SlackBot) -> UsageService:
    assert bot.core.usage is not None
    return bot.core.usage


def chart_message(slack: FakeSlack, channel: str) -> FakeMessage | None:
    return next((m for m in slack.messages(channel) if m.files), None)


async def test_snapshot_usage_posts_the_report_with_its_chart(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "before", actor=ALICE)
    await shrinking(services, free_now=44 * GiB, per_day=2 * GiB)

    answer = await bot.command("/snapshot usage", user=ADMIN, channel=CHANNEL)
    assert answer.status == 200
    message = await bot.slack.wait_until(lambda: chart_message(bot.slack, CHANNEL))

    text = "\n".join(b["text"]["text"] for b in message.blocks if b["type"] == "section")
    assert "Storage usage of host" in text
    for vm in ("web-01", "web-02", "db-01"):
        assert f"*{vm}*" in text
    assert "memory states 128.0 MiB (1 full snapshot(s))" in text
    assert "*Backup store*" in text
    assert f"{FAKE_PLACE} (vm disks): 44.0 GiB free" in text
    assert f"{FAKE_PLACE} fills in about 22 days at the current rate (2.0 GiB/day)" in text

    (file_id,) = message.files
    assert message.images() == [file_id], "the chart is shown by an image block of that file"
    uploaded = bot.slack.file(file_id)
    assert uploaded.data is not None
    kinds = png_chunks(uploaded.data)
    assert b"IDAT" in kinds
    assert len(uploaded.data) > 10_000, "a drawn chart, not an empty picture"
    image = next(b for b in message.blocks if b["type"] == "image")
    assert "disk images" in image["alt_text"]
    assert uploaded.completed
    assert uploaded.channels == [CHANNEL]


async def test_usage_of_one_vm_and_a_cut_report_for_someone_who_sees_only_some(
    bot: SlackBot, services: Services
) -> None:
    await bot.command("/snapshot usage web-02", user=RESTORER, channel=CHANNEL)
    message = await bot.slack.wait_until(lambda: chart_message(bot.slack, CHANNEL))
    text = str(message.blocks)
    assert "Storage usage of web-02" in text
    assert "db-01" not in text

    answer = await bot.command("/snapshot usage", user=RESTORER, channel=CHANNEL)
    private = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    reply = private[0].text or ""
    assert "*web-01*" in reply
    assert "db-01" not in reply, "a restorer on web-* does not see db-01"
    assert "No chart: it shows every VM on the host" in reply
    assert len(bot.slack.files) == 1, "no chart uploaded for the cut report"

    answer = await bot.command("/snapshot usage db-01", user=RESTORER, channel=CHANNEL)
    refused = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    assert "db-01" in (refused[0].text or "")
    assert len(bot.slack.files) == 1


async def test_a_chart_that_cannot_be_posted_leaves_the_report_private(
    bot: SlackBot, services: Services
) -> None:
    bot.slack.fail("files.completeUploadExternal", "not_in_channel")
    answer = await bot.command("/snapshot usage", user=ADMIN, channel=CHANNEL)
    private = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    reply = private[0].text or ""
    assert "Storage usage of host" in reply
    assert "The chart could not be posted here: not_in_channel" in reply


async def test_delete_and_prune_previews_say_what_they_free(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "old", actor=ALICE)
    answer = await bot.command("/snapshot delete web-01 old", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    text = preview[0].text or ""
    assert "Delete snapshot `old` of web-01?" in text
    # The fake keeps a running VM's memory state at half its 256 MiB of RAM.
    assert "Frees: exactly 128.0 MiB of memory states" in text

    for n in range(3):
        services.hv._clock += 86_400
        await services.service.create_snapshot(
            "web-02", f"nightly-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )
    # Its image holds the three memory states and the disk data of all three snapshots.
    services.hv.vms["22222222-2222-2222-2222-222222222222"].disk_bytes = 4 * GiB
    answer = await bot.command("/prune web-02 --keep-last 1 --dry-run", user=ADMIN)
    dry = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    text = dry[0].text or ""
    assert "DELETE nightly-0" in text
    assert "Frees: exactly 256.0 MiB of memory states" in text, "two memory states of 128 MiB"
    # (4 GiB - 384 MiB of memory states) shared by 3 snapshots and the VM: 2 of 4 shares.
    assert "about 1.8 GiB of disk data (an estimate: libvirt cannot tell" in text


async def test_fill_warning_goes_to_the_digest_channel_once_a_day(
    bot: SlackBot, services: Services
) -> None:
    await shrinking(services, free_now=20 * GiB, per_day=2 * GiB)
    jobs = UsageJobs(usage_of(bot), SlackReporter(bot.ctx.client), DIGEST, bot.core.clock)

    await jobs.daily()
    await jobs.daily()  # a second sample the same day: no second warning

    (warning,) = bot.slack.messages(DIGEST)
    assert "*Storage warning*" in warning.text
    assert f"{FAKE_PLACE} fills in about 10 days" in warning.text
    assert jobs.warned_on == datetime.now(UTC).date()

    jobs.warned_on = date.today() - timedelta(days=1)  # as if yesterday's warning
    assert await jobs.warn_if_filling()
    assert len(bot.slack.messages(DIGEST)) == 2, "and again the next day while it lasts"


async def test_no_warning_when_nothing_fills_soon(bot: SlackBot, services: Services) -> None:
    await shrinking(services, free_now=80 * GiB, per_day=1 * GiB)
    jobs = UsageJobs(usage_of(bot), SlackReporter(bot.ctx.client), DIGEST, bot.core.clock)
    await jobs.daily()
    assert bot.slack.messages(DIGEST) == []


async def test_weekly_report_carries_the_chart(bot: SlackBot, services: Services) -> None:
    await shrinking(services, free_now=60 * GiB, per_day=1 * GiB)
    jobs = UsageJobs(usage_of(bot), SlackReporter(bot.ctx.client), DIGEST, bot.core.clock)
    await jobs.weekly()
    (message,) = bot.slack.messages(DIGEST)
    assert "*snapbot weekly storage report*" in str(message.blocks)
    assert f"{FAKE_PLACE} fills in about 60 days" in str(message.blocks)
    (file_id,) = message.files
    assert message.images() == [file_id]
    png_chunks(bot.slack.file(file_id).data or b"")


async def test_home_tab_shows_the_usage_summary(bot: SlackBot, services: Services) -> None:
    await shrinking(services, free_now=20 * GiB, per_day=2 * GiB)
    await usage_of(bot).sample_today()  # the scheduler's daily sample: what the tab shows
    await bot.signed(req.app_home_opened_event_body(ADMIN))
    home = await bot.slack.wait_until(lambda: bot.slack.home_views.get(ADMIN))
    text = str(home["blocks"])
    assert "*Storage* · disk images 30.0 MiB" in text, "the three VMs' images, as sampled"
    assert f"Storage as sampled on {datetime.now(UTC).date().isoformat()}" in text
    assert f"{FAKE_PLACE}: 20.0 GiB free" in text
    assert f"⚠ {FAKE_PLACE} fills in about 10 days" in text


async def test_an_image_block_refused_by_slack_still_shares_the_chart(slack: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    slack.fail("files.completeUploadExternal", "invalid_blocks")
    png = tiny_png()
    file_id = await post_picture(
        client, CHANNEL, "the report", Picture(png, "u.png", "Storage usage", "a chart")
    )
    (message,) = slack.messages(CHANNEL)
    assert message.text == "the report", "the text goes as the file's comment"
    assert message.files == [file_id]
    assert message.images() == []
    assert slack.file(file_id).data == png


def test_the_manifest_grants_the_upload_scope() -> None:
    """files.getUploadURLExternal answers missing_scope without it, and no chart is posted."""
    assert "files:write" in load_manifest()["oauth_config"]["scopes"]["bot"]
