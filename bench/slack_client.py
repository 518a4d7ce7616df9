"""Slack's side of bench/responsiveness.py, in a process of its own: Slack is remote, so the
CPU it spends signing and sending requests and reading the answers must not be taken from the
bot's event loop (in the same loop it was about a fifth of the loop's time).

Run as ``python -m bench.slack_client URL SECRET``. It prints ``{"ready": true}``, then reads
one JSON line per batch, ``{"in_flight": 50, "bodies": ["..."]}``, sends every body signed as
Slack does (at most ``in_flight`` at a time), and prints ``{"answers": [[status, seconds,
text], ...]}`` in the bodies' order. Each ack is timed as Slack sees it: from the request being
sent to its HTTP answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from tests.fakes.slack_requests import sign


async def _batch(
    session: aiohttp.ClientSession, url: str, secret: str, batch: dict[str, Any]
) -> list[list[Any]]:
    gate = asyncio.Semaphore(int(batch["in_flight"]))

    async def one(body: str) -> list[Any]:
        async with gate:
            data = body.encode()
            headers = sign(secret, data)
            started = time.monotonic()
            async with session.post(url, data=data, headers=headers) as response:
                text = await response.text()
                return [response.status, time.monotonic() - started, text]

    return list(await asyncio.gather(*(one(b) for b in batch["bodies"])))


async def serve(url: str, secret: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        print(json.dumps({"ready": True}), flush=True)
        while line := await reader.readline():
            answers = await _batch(session, url, secret, json.loads(line))
            print(json.dumps({"answers": answers}), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
