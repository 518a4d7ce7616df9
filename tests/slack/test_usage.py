"""Storage usage in Slack: ``/snapshot usage`` with its chart, the Home tab's summary, the
weekly report and the warning that a filesystem is about to fill."""

from __future__ import annotations

import struct
import zlib

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.files import Picture, post_picture
from tests.fakes.slack import FakeSlack

CHANNEL = "C0OPS"
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
