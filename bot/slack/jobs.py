"""Work that runs after Slack has been acknowledged.

Bolt keeps no reference to a listener's work after the ack, so a long restore would be an
orphan task whose failure nobody sees. Every such piece of work is started here instead: tracked,
its unexpected errors logged with a reference the user is shown, and waited for at shutdown.

Acks come first. Every piece of work and every ack run on the one event loop; a burst of requests
(50 people clicking at once) would otherwise have each command's work (the VM's sync, a
listing, posting the answer) start right after its own ack and run ahead of the acks still
queued, and Slack gives each ack 3 s. So a job is held back while any Slack request is being
answered (``SlackRequests``, counted by the HTTP transport), for at most ``hold_at_most``
seconds so that a steady stream of requests cannot starve the work.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

OnCrash = Callable[[str], Awaitable[None]]

# A job waits for the requests in flight no longer than this: well within what a person notices,
# and long enough for a burst of 50 acks (about 1-2 ms of loop time each) to be sent first.
HOLD_AT_MOST_SECONDS = 1.0
# And until none has been in flight for this long: in a burst the count touches zero between
# one request's answer and the next one's arrival, which must not let every held job in.
SETTLE_SECONDS = 0.05


class SlackRequests:
    """How many Slack requests are being answered right now, and a way to wait until none is.

    Only what has to answer Slack within its deadline counts (an HTTP request from Slack); Socket
    Mode counts nothing, so jobs there start at once, as they always did."""

    def __init__(self, settle: float = SETTLE_SECONDS) -> None:
        self._settle = settle
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._last_end = float("-inf")

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        self._in_flight += 1
        self._quiet.clear()

    def end(self) -> None:
        self._in_flight -= 1
        if self._in_flight <= 0:
            self._in_flight = 0
            self._last_end = asyncio.get_running_loop().time()
            self._quiet.set()

    async def quiet(self, at_most: float) -> bool:
        """Return once no request has been in flight for the settle time (True), or after
        ``at_most`` seconds (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        while True:
            now = loop.time()
            remaining = deadline - now
            if not self._in_flight:
                settling = self._last_end + self._settle - now
                if settling <= 0:
                    return True
                if remaining <= 0:
                    return False
                await asyncio.sleep(min(settling, remaining))
                continue
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._quiet.wait()
            except TimeoutError:
                return False


class Jobs:
    def __init__(
        self,
        requests: SlackRequests | None = None,
        *,
        hold_at_most: float = HOLD_AT_MOST_SECONDS,
    ) -> None:
        self.requests = requests if requests is not None else SlackRequests()
        self._hold_at_most = hold_at_most
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        name: str,
        work: Coroutine[Any, Any, None],
        on_crash: OnCrash | None = None,
        *,
        hold: bool = True,
    ) -> asyncio.Task[None]:
        """Run ``work`` in the background, once no Slack request is waiting for its ack (at most
        ``hold_at_most`` seconds later; at once with ``hold=False``, for work an ack itself
        waits for or that has its own deadline). If it raises, log it and call ``on_crash`` with
        a reference id so the user can be told something went wrong."""

        async def guarded() -> None:
            try:
                if hold:
                    await self.requests.quiet(self._hold_at_most)
            except BaseException:
                work.close()  # cancelled while held: it never ran
                raise
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                reference = uuid.uuid4().hex[:8]
                logger.exception("job %s failed (reference %s)", name, reference)
                if on_crash is not None:
                    try:
                        await on_crash(reference)
                    except Exception:
                        logger.exception("could not report the failure of job %s", name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Return once no job runs (jobs started meanwhile are waited for too)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace_seconds: float) -> None:
        """Wait for running jobs; cancel what is still running after ``grace_seconds`` (the start-up
        reconciliation of the next run settles operations cut short)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
