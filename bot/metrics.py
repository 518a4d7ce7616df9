"""Prometheus metrics: the only module that imports ``prometheus_client``.

``Metrics`` is told about operations as they run (it is the core's ``OperationObserver``), about
Slack API errors and retries (``counting_retry_handlers``) and about scheduler ticks; the rest
(snapshot ages, locks, hypervisor reachability) is read from the core's ``StatusService`` when
Prometheus scrapes. Each ``Metrics`` has its own registry, so tests can hold several.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from core.domain.operation import Operation, Stage
from core.errors import InvalidInput
from core.services.facade import Core

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"

# The ``*_created`` timestamp series double the page for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Operations last from a second (a rename) to many minutes (a large memory snapshot).
_STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


class Metrics:
    """Every metric snapbot exports, in one registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._core: Core | None = None
        self.operations = Counter(
            "snapbot_operations",
            "Operations ended, by kind and status (succeeded, failed, rejected, reconciled).",
            ["kind", "outcome"],
            registry=r,
        )
        self.operation_seconds = Histogram(
            "snapbot_operation_duration_seconds",
            "Whole operations, by kind.",
            ["kind"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "snapbot_operation_stage_duration_seconds",
            "Each stage of an operation, by kind and stage.",
            ["kind", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.snapshot_age = Gauge(
            "snapbot_vm_newest_snapshot_age_seconds",
            "Seconds since each VM's newest snapshot (from the catalogue).",
            ["vm"],
            registry=r,
        )
        self.locks_held = Gauge("snapbot_locks_held", "VM locks held now.", registry=r)
        self.lock_seconds = Gauge(
            "snapbot_lock_held_seconds",
            "How long each held VM lock has been held, by VM and operation kind.",
            ["vm", "kind"],
            registry=r,
        )
        self.reachable = Gauge(
            "snapbot_hypervisor_reachable",
            "1 when the hypervisor answered and was reconciled, else 0.",
            ["host"],
            registry=r,
        )
        self.host_up = Gauge(
            "snapbot_host_up",
            "1 when the configured hypervisor host answers and was reconciled, else 0 (an "
            "alias of another host is left out).",
            ["host", "uri"],
            registry=r,
        )
        self.connect_attempts = Gauge(
            "snapbot_hypervisor_connect_attempts",
            "Attempts made to reach the hypervisor since start.",
            ["host"],
            registry=r,
        )
        self.slack_errors = Counter(
            "snapbot_slack_api_errors",
            "Slack Web API calls that failed, by cause (rate_limited, server_error, connection).",
            ["cause"],
            registry=r,
        )
        self.slack_retries = Counter(
            "snapbot_slack_api_retries",
            "Slack Web API calls retried, by cause.",
            ["cause"],
            registry=r,
        )
        self.scheduler_lag = Histogram(
            "snapbot_scheduler_lag_seconds",
            "How late a scheduled run started after its slot.",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf")),
            registry=r,
        )
        self.missed_slots = Counter(
            "snapbot_scheduler_missed_slots",
            "Scheduled slots that were missed (not run at their time).",
            registry=r,
        )

    # --- the core's OperationObserver -------------------------------------------------------

    def stage_finished(self, operation: Operation, stage: Stage, seconds: float) -> None:
        self.stage_seconds.labels(operation.kind.value, stage.value).observe(seconds)

    def operation_finished(self, operation: Operation, seconds: float) -> None:
        self.operations.labels(operation.kind.value, operation.status.value).inc()
        self.operation_seconds.labels(operation.kind.value).observe(seconds)

    # --- the scheduler ----------------------------------------------------------------------

    def slot_settled(self, lag_seconds: float | None, missed: int) -> None:
        if lag_seconds is not None:
            self.scheduler_lag.observe(max(0.0, lag_seconds))
        if missed:
            self.missed_slots.inc(missed)

    # --- the page ---------------------------------------------------------------------------

    def bind(self, core: Core) -> None:
        """Read the current state from ``core`` at each scrape."""
        self._core = core

    async def page(self) -> bytes:
        """The exposition text, gauges read from the catalogue just now."""
        if self._core is not None:
            readings = await self._core.status.readings()
            # Cleared first: a VM deleted or a lock released must not linger at its last value.
            self.snapshot_age.clear()
            for vm, age in readings.newest_snapshot_age.items():
                self.snapshot_age.labels(vm).set(age)
            self.lock_seconds.clear()
            self.locks_held.set(len(readings.locks))
            for lock in readings.locks:
                self.lock_seconds.labels(lock.vm_name, lock.kind).set(lock.seconds)
            for host in readings.hosts:
                if host.alias_of is not None:
                    continue  # the same hypervisor as another host, which is reported
                self.reachable.labels(host.uri).set(1 if host.reachable else 0)
                self.connect_attempts.labels(host.uri).set(host.attempts)
                self.host_up.labels(host.name, host.uri).set(1 if host.reachable else 0)
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        body = await self.page()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class _Counting(AsyncRetryHandler):
    """Counts each failure a Slack retry handler recognises and each retry it decides on, and
    leaves every decision to that handler."""

    def __init__(self, inner: AsyncRetryHandler, cause: str, metrics: Metrics) -> None:
        super().__init__(inner.max_retry_count, inner.interval_calculator)
        self._inner = inner
        self._cause = cause
        self._metrics = metrics

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        # the private check is the handler's "is this my kind of failure", whatever the count
        if await self._inner._can_retry_async(
            state=state, request=request, response=response, error=error
        ):
            self._metrics.slack_errors.labels(self._cause).inc()
        retry = await self._inner.can_retry_async(
            state=state, request=request, response=response, error=error
        )
        if retry:
            self._metrics.slack_retries.labels(self._cause).inc()
        return retry

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        await self._inner.prepare_for_next_attempt_async(
            state=state, request=request, response=response, error=error
        )


def metrics_port(environ: Mapping[str, str]) -> int | None:
    """``SNAPBOT_METRICS_PORT``: where a process with no Slack HTTP server serves /metrics."""
    text = environ.get("SNAPBOT_METRICS_PORT", "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise InvalidInput(
            f"SNAPBOT_METRICS_PORT must be a TCP port number from 1 to 65535, not {text!r}; "
            "unset it to serve no metrics outside the Slack HTTP server"
        )
    return int(text)


def counting_retry_handlers(
    handlers: Sequence[tuple[str, AsyncRetryHandler]], metrics: Metrics | None
) -> list[AsyncRetryHandler]:
    """``handlers`` (cause, handler), each counted in ``metrics`` when there are metrics."""
    if metrics is None:
        return [handler for _, handler in handlers]
    return [_Counting(handler, cause, metrics) for cause, handler in handlers]


@asynccontextmanager
async def metrics_server(
    metrics: Metrics, port: int | None, host: str = "0.0.0.0"
) -> AsyncIterator[int | None]:
    """``GET /metrics`` on its own small server (when no Slack HTTP server runs), only when a
    ``port`` is given; yields the port it listens on (None: not serving)."""
    if port is None:
        yield None
        return
    application = web.Application()
    application.router.add_get(METRICS_PATH, metrics.handle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        logger.info("serving metrics on %s:%s%s", host, bound, METRICS_PATH)
        yield bound
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
