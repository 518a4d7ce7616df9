"""Work that runs after Slack has been acknowledged.

Bolt keeps no reference to a listener's work after the ack, so a long restore would be an
orphan task whose failure nobody sees. Every such piece of work is started here instead: tracked,
its unexpected errors logged with a reference the user is shown, and waited for at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

OnCrash = Callable[[str], Awaitable[None]]


class Jobs:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, name: str, work: Coroutine[Any, Any, None], on_crash: OnCrash | None = None
    ) -> asyncio.Task[None]:
        """Run ``work`` in the background. If it raises, log it and call ``on_crash`` with a
        reference id so the user can be told something went wrong."""

        async def guarded() -> None:
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
