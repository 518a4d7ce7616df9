"""The one libvirt connection wrapper: a bounded thread pool, keepalive, reconnect.

Every libvirt call blocks (libvirt-python releases the GIL but not the caller), so each runs on
this wrapper's own pool, never on the event loop's thread and never on the loop's default
executor (aiohttp resolves DNS there). One connection is shared by the pool's threads: libvirt's
remote client multiplexes concurrent calls, so a long snapshot of one VM does not hold up a
listing of another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from core.adapters.libvirt.errors import is_connection_error, map_libvirt_errors
from core.errors import CoreError, HypervisorTimeout

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The daemon drops a client that stays silent for keepalive_interval * (count + 1) seconds
# (30 s by default); keepalives need a running libvirt event loop in the client.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

# Deadlines of one libvirt call: reads answer in well under a second on a healthy host; a
# memory save writes the guest's RAM and may take many minutes on a big VM.
READ_DEADLINE = 120.0
MUTATION_DEADLINE = 3600.0
# After an abort request (or the deadline of a call that cannot be aborted), how long the call
# still gets to come back before its outcome is reported unknown.
ABORT_GRACE = 30.0

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ensure_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread, once per process.

    It must be registered before the first connection opens, or keepalives and close callbacks
    never fire.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _log_late_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("a libvirt call that timed out failed later: %s", future.exception())


def _assert_off_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise AssertionError("a libvirt call ran on the event loop's thread")


def is_local_uri(uri: str) -> bool:
    """True when the URI names this machine (no host part), so host paths can be inspected."""
    parts = urlsplit(uri)
    return not parts.hostname and "+" not in parts.scheme


class LibvirtConnection:
    """A lazily opened, self-healing connection with its own bounded thread pool."""

    def __init__(
        self,
        uri: str,
        *,
        workers: int = 4,
        read_deadline: float = READ_DEADLINE,
        mutation_deadline: float = MUTATION_DEADLINE,
    ) -> None:
        self.uri = uri
        self.read_deadline = read_deadline
        self.mutation_deadline = mutation_deadline
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="libvirt")
        # Aborts get their own thread: the pool may be full of the very calls that hang.
        self._abort_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libvirt-abort")
        self._lock = threading.Lock()
        self._conns: dict[int, Any] = {}  # pool thread -> its connection
        self._opened: set[int] = set()  # threads that opened one already
        self.reconnects = 0

    async def run(
        self,
        fn: Callable[[Any], T],
        *,
        mutating: bool,
        vm: str | None = None,
        snapshot: str | None = None,
        abort: Callable[[Any], None] | None = None,
    ) -> T:
        """Run ``fn(conn)`` on the pool. A read whose connection died is retried once on a new
        connection; a mutating call never is (it may have happened): the caller reconciles.

        Every call has a deadline (``read_deadline`` or ``mutation_deadline``): a hung call
        would otherwise hold its VM's lock forever while the heartbeat says all is well. At the
        deadline ``abort(conn)`` asks libvirt to abort the job where it can
        (``virDomainAbortJob``; only a request), the call gets ``ABORT_GRACE`` seconds more to
        come back, and then ``HypervisorTimeout`` says the outcome is unknown. The thread itself
        cannot be stopped (CPython has no way); it ends when libvirt answers.
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._call, fn, mutating, vm, snapshot)
        limit = self.mutation_deadline if mutating else self.read_deadline
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            pass
        aborted = ""
        if abort is not None:
            logger.warning("libvirt call on %s exceeded %.0f s; asking libvirt to abort", vm, limit)
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(self._abort_pool, self._call, abort, True, vm, None),
                    ABORT_GRACE,
                )
                aborted = "; snapbot asked libvirt to abort the job"
            except (TimeoutError, CoreError) as exc:
                aborted = f"; asking libvirt to abort the job failed ({exc or 'no answer'})"
            try:
                return await asyncio.wait_for(asyncio.shield(future), ABORT_GRACE)
            except TimeoutError:
                pass
        # Whatever the call raises later is logged, not lost in an unawaited future.
        future.add_done_callback(_log_late_failure)
        raise HypervisorTimeout(
            f"libvirt did not answer within {limit:.0f} s{aborted}", vm=vm, seconds=limit
        )

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        """Run other blocking host work (qemu-img, statvfs) on the same bounded pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn)

    def _call(
        self, fn: Callable[[Any], T], mutating: bool, vm: str | None, snapshot: str | None
    ) -> T:
        _assert_off_loop()
        with map_libvirt_errors(vm=vm, snapshot=snapshot):
            conn = self._connection()
            try:
                return fn(conn)
            except libvirt.libvirtError as exc:
                if not is_connection_error(exc):
                    raise
                self._forget(conn)
                if mutating:
                    raise
                logger.warning("libvirt connection to %s lost; reconnecting once", self.uri)
                return fn(self._connection())

    def _connection(self) -> Any:
        # One connection per pool thread: libvirt's client lets one waiting call hold back the
        # others on the same connection until its next keepalive tick, so a call stuck behind
        # another client's job on one VM would delay every other VM's calls.
        # (libvirt's test driver is in-process, and each open of it is a separate host: one.)
        thread = 0 if self.uri.startswith("test:") else threading.get_ident()
        with self._lock:
            conn = self._conns.get(thread)
        if conn is not None:
            try:
                if conn.isAlive() == 1:
                    return conn
            except libvirt.libvirtError:
                pass
            self._forget(conn)
        _ensure_event_loop()
        conn = libvirt.open(self.uri)
        with self._lock:
            # A thread's every open after its first is a reconnect, whoever noticed the loss
            # (isAlive, the close callback, or a call that failed with a connection error).
            if thread in self._opened:
                self.reconnects += 1
                logger.warning("reconnected to %s (%d so far)", self.uri, self.reconnects)
            self._opened.add(thread)
            self._conns[thread] = conn
        # local drivers (test://) have no keepalive; there is nothing to detect there
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        return conn

    def _on_close(self, conn: Any, reason: int, _opaque: object) -> None:
        logger.warning("libvirt connection to %s closed (reason %d)", self.uri, reason)
        self._forget(conn)

    def _forget(self, conn: Any) -> None:
        with self._lock:
            for thread, known in list(self._conns.items()):
                if known is conn:
                    del self._conns[thread]

    async def close(self) -> None:
        """Close the connection and stop the pool."""

        def _close() -> None:
            with self._lock:
                conns, self._conns = list(self._conns.values()), {}
            for conn in conns:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.unregisterCloseCallback()
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._abort_pool, _close)
        self._pool.shutdown(wait=False)
        self._abort_pool.shutdown(wait=False)
