"""Prometheus metrics, scraped over HTTP from the running bolt app while and after a snapshot
taken through a signed slash command runs on the fake hypervisor."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import redaction
from bot.metrics import Metrics, metrics_port, metrics_server
from bot.slack.app import build_client
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock
from core.domain.operation import Actor, OperationKind, OperationStatus
from core.errors import InvalidInput
from scheduler.service import build_scheduler
from tests.conftest import Services
from tests.fakes.slack import FakeSlack
from tests.slack.harness import CHANNEL, OPERATOR, SlackBot, running_bot, slack_settings
from tests.unit.test_scheduler import DAY1, FakeClock, Reports, nightly

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

WEB_01 = "11111111-1111-1111-1111-111111111111"


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def observed(core: Core, services: Services, metrics: Metrics) -> Core:
    """The core as ``snapbot run`` wires it: its operations reported to ``metrics``."""
    wired = wire(
        core.settings,
        services.hv,
        services.catalogue,
        SystemClock(),
        libvirt_uri=core.libvirt_uri,
        observer=metrics,
    )
    metrics.bind(wired)
    return wired


@pytest.fixture
async def bot(observed: Core, slack: FakeSlack, metrics: Metrics) -> AsyncIterator[SlackBot]:
    """The app served as ``snapbot run`` serves it, with /metrics beside Slack's events."""
    async with running_bot(observed, slack, metrics=metrics) as running:
        yield running


@pytest.fixture
async def scrape(bot: SlackBot) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{bot.http.port}") as session:
        yield session


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the operations logger writes through snapbot's JSON handler."""
    stream = io.StringIO()
    handler = redaction.log_handler(stream, "json")
    target = logging.getLogger("snapbot.operations")
    target.addHandler(handler)
    level = target.level
    target.setLevel(logging.INFO)
    yield stream
    target.removeHandler(handler)
    target.setLevel(level)


async def get_metrics(session: aiohttp.ClientSession) -> tuple[str, Samples]:
    async with session.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return text, parse(text)


async def test_a_snapshot_shows_in_the_metrics_while_it_runs_and_after(
    bot: SlackBot,
    services: Services,
    scrape: aiohttp.ClientSession,
    json_log: io.StringIO,
) -> None:
    during: list[Samples] = []

    async def look() -> None:
        during.append((await get_metrics(scrape))[1])

    services.hv.after_create = look
    answer = await bot.command("/snapshot web-01 before-upgrade", user=OPERATOR)
    assert answer.status == 200
    await bot.idle()

    # while it ran: web-01 locked by a snapshot, nothing counted as ended yet
    assert len(during) == 1
    assert value(during[0], "snapbot_locks_held") == 1
    held = value(during[0], "snapbot_lock_held_seconds", vm="web-01", kind="snapshot")
    assert held is not None
    assert held >= 0
    assert value(during[0], "snapbot_operations_total", kind="snapshot", outcome="succeeded") in (
        None,
        0,
    )

    text, after = await get_metrics(scrape)
    assert value(after, "snapbot_operations_total", kind="snapshot", outcome="succeeded") == 1
    assert value(after, "snapbot_locks_held") == 0
    assert value(after, "snapbot_lock_held_seconds", vm="web-01", kind="snapshot") is None
    stages = {
        dict(labels)["stage"]
        for (name, labels), count in after.items()
        if name == "snapbot_operation_stage_duration_seconds_count" and count > 0
    }
    assert "capturing disk" in stages or "saving memory and disk" in stages, stages
    age = value(after, "snapbot_vm_newest_snapshot_age_seconds", vm="web-01")
    assert age is not None
    assert age >= 0
    assert value(after, "snapbot_vm_newest_snapshot_age_seconds", vm="web-02") is None
    assert value(after, "snapbot_hypervisor_reachable", host="fake:///") == 1
    assert "xoxb-" not in text
    assert "xapp-" not in text

    # the operation's end, one JSON line, carrying the id the catalogue has
    [row] = [
        op
        for op in await services.catalogue.operations(WEB_01)
        if op.kind is OperationKind.SNAPSHOT
    ]
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    ended = [line for line in lines if line.get("operation_id") == row.id]
    assert len(ended) == 1, lines
    assert ended[0]["logger"] == "snapbot.operations"
    assert ended[0]["level"] == "INFO"
    assert ended[0]["kind"] == "snapshot"
    assert ended[0]["vm"] == "web-01"
    assert ended[0]["status"] == OperationStatus.SUCCEEDED.value == row.status.value
    assert ended[0]["duration_seconds"] >= 0
    assert "xoxb-" not in json_log.getvalue()


async def test_refused_and_failed_operations_are_counted_by_outcome(
    bot: SlackBot, services: Services, scrape: aiohttp.ClientSession
) -> None:
    await bot.command("/snapshot web-01 sneaky", user="U_VIEWER")
    await bot.idle()
    _, samples = await get_metrics(scrape)
    assert value(samples, "snapbot_operations_total", kind="snapshot", outcome="rejected") == 1
    assert value(samples, "snapbot_operations_total", kind="snapshot", outcome="succeeded") is None


async def test_an_operation_a_crash_left_is_counted_and_logged_when_reconciled(
    observed: Core, services: Services, metrics: Metrics, json_log: io.StringIO
) -> None:
    vm = await services.hv.get_vm("web-01")
    op = services.runner.new_operation(
        OperationKind.SNAPSHOT, Actor("U1", "slack"), vm_uuid=vm.uuid, vm_name=vm.name
    )
    # a process of this host that died mid-snapshot left its row and lock behind
    await services.catalogue.begin_operation(op, f"{socket.gethostname()}:999999:dead")
    assert await observed.watch.connect_once()
    samples = parse((await metrics.page()).decode())
    assert value(samples, "snapbot_operations_total", kind="snapshot", outcome="reconciled") == 1
    [line] = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert line["operation_id"] == op.id
    assert line["status"] == "reconciled"


async def test_hypervisor_unreachable_reads_zero(
    observed: Core, metrics: Metrics, scrape: aiohttp.ClientSession
) -> None:
    observed.watch.ready.clear()
    _, samples = await get_metrics(scrape)
    assert value(samples, "snapbot_hypervisor_reachable", host="fake:///") == 0


async def test_slack_api_errors_and_retries_are_counted(slack: FakeSlack, metrics: Metrics) -> None:
    client = build_client(slack_settings(slack), metrics)
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    try:
        await client.chat_postMessage(channel=CHANNEL, text="hello")
    finally:
        if client.session is not None:
            await client.session.close()
    samples = parse((await metrics.page()).decode())
    assert value(samples, "snapbot_slack_api_errors_total", cause="rate_limited") == 1
    assert value(samples, "snapbot_slack_api_retries_total", cause="rate_limited") == 1
    assert value(samples, "snapbot_slack_api_errors_total", cause="server_error") is None


async def test_scheduler_lag_and_missed_slots(
    core: Core, services: Services, metrics: Metrics
) -> None:
    clock = FakeClock(DAY1)
    clocked = wire(core.settings, services.hv, services.catalogue, clock, libvirt_uri="fake:///")
    await services.catalogue.add_schedule(nightly(last_fire=DAY1 + timedelta(hours=2)))
    scheduler = build_scheduler(clocked, Reports(), observer=metrics)
    await scheduler.start()
    await scheduler.wait_idle()  # the start-up tick, at DAY1: nothing due
    try:
        # down over three nightly slots, back 30 minutes after the third: it runs late
        clock.moment = DAY1 + timedelta(days=3, hours=2, minutes=30)
        await scheduler.tick()
    finally:
        await scheduler.stop()
    samples = parse((await metrics.page()).decode())
    assert value(samples, "snapbot_scheduler_lag_seconds_count") == 1
    assert value(samples, "snapbot_scheduler_lag_seconds_sum") == 30 * 60
    assert value(samples, "snapbot_scheduler_missed_slots_total") == 3


async def test_a_console_run_serves_metrics_only_on_the_port_asked(metrics: Metrics) -> None:
    assert metrics_port({}) is None
    with pytest.raises(InvalidInput, match="SNAPBOT_METRICS_PORT must be a TCP port number"):
        metrics_port({"SNAPBOT_METRICS_PORT": "http"})
    with pytest.raises(InvalidInput, match="not '70000'"):
        metrics_port({"SNAPBOT_METRICS_PORT": "70000"})
    assert metrics_port({"SNAPBOT_METRICS_PORT": "9464"}) == 9464
    async with metrics_server(metrics, None) as none:
        assert none is None
    async with metrics_server(metrics, 0, host="127.0.0.1") as port:
        assert port
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            assert "# TYPE snapbot_operations_total counter" in await response.text()
