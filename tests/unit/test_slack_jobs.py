"""Acks first: background work waits while Slack requests are being answered, for a bounded
time, and the HTTP transport is what counts those requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bot.slack.jobs import Jobs, SlackRequests
from bot.slack.transport import EVENTS_PATH, HEALTH_PATH, HttpTransport


async def test_a_job_waits_while_a_request_is_in_flight_and_starts_when_it_ends() -> None:
    jobs = Jobs(hold_at_most=5.0)
    began = asyncio.Event()

    async def work() -> None:
        began.set()

    jobs.requests.begin()
    jobs.start("after-ack", work())
    await asyncio.sleep(0.1)
    assert not began.is_set(), "the job ran while an ack was still being answered"
    jobs.requests.end()
    async with asyncio.timeout(1):
        await began.wait()
    await jobs.wait_idle()


async def test_a_job_waits_for_every_request_of_a_burst() -> None:
    jobs = Jobs(hold_at_most=5.0)
    began = asyncio.Event()

    async def work() -> None:
        began.set()

    for _ in range(3):
        jobs.requests.begin()
    jobs.start("after-ack", work())
    for _ in range(2):
        jobs.requests.end()
        await asyncio.sleep(0.02)
        assert not began.is_set()
    jobs.requests.end()
    async with asyncio.timeout(1):
        await began.wait()


async def test_a_steady_stream_of_requests_cannot_starve_a_job() -> None:
    jobs = Jobs(hold_at_most=0.3)
    began = asyncio.Event()

    async def work() -> None:
        began.set()

    stop = asyncio.Event()

    async def stream() -> None:
        # Always at least one request in flight, each overlapping the next.
        jobs.requests.begin()
        while not stop.is_set():
            jobs.requests.begin()
            await asyncio.sleep(0.01)
            jobs.requests.end()
        jobs.requests.end()

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(0.02)
    t0 = time.monotonic()
    jobs.start("after-ack", work())
    async with asyncio.timeout(2):
        await began.wait()
    waited = time.monotonic() - t0
    assert jobs.requests.in_flight > 0, "the stream was still going when the job started"
    assert 0.25 <= waited < 1.0, f"held for the bound (0.3 s), not forever: {waited:.2f} s"
    stop.set()
    await streaming


async def test_unheld_work_and_work_with_nothing_in_flight_start_at_once() -> None:
    jobs = Jobs(hold_at_most=5.0)
    order: list[str] = []

    async def work(name: str) -> None:
        order.append(name)

    jobs.start("idle", work("idle"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["idle"]
    jobs.requests.begin()
    jobs.start("held", work("held"))
    jobs.start("urgent", work("urgent"), hold=False)
    await asyncio.sleep(0.05)
    assert order == ["idle", "urgent"]
    jobs.requests.end()
    await jobs.wait_idle()
    assert order == ["idle", "urgent", "held"]


async def test_a_job_cancelled_while_held_never_runs_and_leaves_no_warning() -> None:
    jobs = Jobs(hold_at_most=5.0)
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    jobs.requests.begin()
    task = jobs.start("held", work())
    await asyncio.sleep(0.01)
    await jobs.drain(0.01)  # shutdown: what is still waiting is cancelled
    assert task.cancelled()
    assert not ran
    jobs.requests.end()


class _SlowSlack:
    """Stands in for bolt's app: its events handler answers when told to."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()

    def web_app(self, path: str, port: int) -> web.Application:
        async def events(request: web.Request) -> web.Response:
            self.arrived.set()
            await self.release.wait()
            return web.Response(text="")

        application = web.Application()
        application.router.add_post(path, events)
        return application


@pytest.fixture
async def transport() -> AsyncIterator[tuple[HttpTransport, _SlowSlack, SlackRequests]]:
    slack = _SlowSlack()
    requests = SlackRequests()
    http = HttpTransport(slack, host="127.0.0.1", port=0, requests=requests)  # type: ignore[arg-type]
    await http.start()
    try:
        yield http, slack, requests
    finally:
        slack.release.set()
        await http.stop()


async def test_the_http_transport_counts_slack_requests_until_answered(
    transport: tuple[HttpTransport, _SlowSlack, SlackRequests],
) -> None:
    http, slack, requests = transport
    jobs = Jobs(requests, hold_at_most=5.0)
    began = asyncio.Event()

    async def work() -> None:
        began.set()

    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{http.port}"
        async with session.get(base + HEALTH_PATH) as health:
            assert health.status == 200
        assert requests.in_flight == 0, "only Slack's requests count"
        pending = asyncio.create_task(session.post(base + EVENTS_PATH, data=b"{}"))
        await asyncio.wait_for(slack.arrived.wait(), 2)
        assert requests.in_flight == 1
        jobs.start("after-ack", work())
        await asyncio.sleep(0.1)
        assert not began.is_set()
        slack.release.set()
        response = await pending
        response.release()
        async with asyncio.timeout(1):
            await began.wait()
        assert requests.in_flight == 0


async def test_a_gap_between_two_requests_of_a_burst_does_not_let_jobs_in() -> None:
    jobs = Jobs(SlackRequests(settle=0.1), hold_at_most=5.0)
    began = asyncio.Event()

    async def work() -> None:
        began.set()

    jobs.requests.begin()
    jobs.start("after-ack", work())
    jobs.requests.end()  # the burst's client is about to send the next one
    await asyncio.sleep(0.03)
    assert not began.is_set(), "the job started in the gap between two requests"
    jobs.requests.begin()
    await asyncio.sleep(0.15)
    assert not began.is_set()
    jobs.requests.end()
    t0 = time.monotonic()
    async with asyncio.timeout(1):
        await began.wait()
    assert time.monotonic() - t0 >= 0.09, "started once nothing had been in flight for a while"
