"""Posting a message with a picture (the storage-usage chart) through Slack's files API.

``files.upload`` is gone; an upload is three steps: ``files.getUploadURLExternal`` (a file id and
a one-time upload URL), the bytes POSTed to that URL, then ``files.completeUploadExternal``,
which shares the file in a channel. Slack refuses an image block showing a file that is shared
nowhere (only its uploader can see it), so the message is the share itself: its blocks are the
text and an image block naming the file by ``slack_file`` id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import Block, sections

logger = logging.getLogger(__name__)

# Room for the image block under the text (Slack allows 50 blocks a message).
_TEXT_BLOCKS = 45
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60)


class UploadFailed(Exception):
    """The file's bytes did not reach Slack."""


@dataclass(frozen=True, slots=True)
class Picture:
    """A PNG to show: ``alt`` is read by screen readers and shown where images are off."""

    png: bytes
    filename: str
    title: str
    alt: str


def image_block(file_id: str, picture: Picture) -> Block:
    return {
        "type": "image",
        "slack_file": {"id": file_id},
        "alt_text": picture.alt[:2000],
        "title": {"type": "plain_text", "text": picture.title[:2000]},
    }


async def _upload(client: AsyncWebClient, picture: Picture) -> str:
    """Steps one and two: the file id, its bytes uploaded (not shared anywhere yet)."""
    reply = await client.files_getUploadURLExternal(
        filename=picture.filename, length=len(picture.png), alt_txt=picture.alt[:1000]
    )
    file_id, url = str(reply["file_id"]), str(reply["upload_url"])
    async with (
        aiohttp.ClientSession(timeout=UPLOAD_TIMEOUT) as session,
        session.post(url, data=picture.png) as response,
    ):
        if response.status != 200:
            body = (await response.text())[:200]
            raise UploadFailed(f"upload of {picture.filename}: HTTP {response.status} {body}")
    return file_id


async def post_picture(
    client: AsyncWebClient,
    channel: str,
    text: str,
    picture: Picture,
    *,
    thread_ts: str | None = None,
) -> str:
    """Post ``text`` with ``picture`` under it in ``channel``; returns the file's id.
    ``SlackApiError`` / ``UploadFailed`` when it cannot be posted."""
    file_id = await _upload(client, picture)
    shown: list[Block] = [*sections(text, limit=_TEXT_BLOCKS), image_block(file_id, picture)]
    share: dict[str, Any] = {
        "files": json.dumps([{"id": file_id, "title": picture.title}]),
        "channel_id": channel,
    }
    if thread_ts is not None:
        share["thread_ts"] = thread_ts
    try:
        # In a form body: slack_sdk's files_completeUploadExternal puts its arguments in the
        # URL, where a long report's blocks would not fit.
        await client.api_call(
            "files.completeUploadExternal", data={**share, "blocks": json.dumps(shown)}
        )
    except SlackApiError as exc:
        if exc.response.get("error") != "invalid_blocks":
            raise
        # The image block was refused: share the file plainly, the text as its comment.
        logger.warning("image block refused (%s); attaching the file", exc.response.get("errors"))
        await client.api_call(
            "files.completeUploadExternal", data={**share, "initial_comment": text[:3900]}
        )
    return file_id
