"""One bot process of the replica test: the real composition root and scheduler against a shared
PostgreSQL database, on a simulated clock that runs ``speed`` times faster than the wall clock.

Prints one JSON line per event (leadership changes, run reports) for the test to read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from core.bootstrap import build_core
from core.config import Settings
from core.domain.snapshot import Snapshot
from core.services.reports import Digest, RunReport
from scheduler.service import build_scheduler


class SimulatedClock:
    def __init__(self, t0: datetime, epoch: float, speed: float) -> None:
        self._t0, self._epoch, self._speed = t0, epoch, speed

    def now(self) -> datetime:
        return self._t0 + timedelta(seconds=(time.time() - self._epoch) * self._speed)


def emit(**event: object) -> None:
    print(json.dumps({"pid": os.getpid(), "at": time.time(), **event}), flush=True)


class PrintingReporter:
    async def run_report(self, report: RunReport) -> None:
        emit(
            event="report",
            fire_time=report.fire_time.isoformat() if report.fire_time else None,
            catch_up=report.catch_up,
            missed=[m.isoformat() for m in report.missed],
        )

    async def hold_reminder(self, snapshot: Snapshot) -> None:
        emit(event="reminder", snapshot=snapshot.label)

    async def digest(self, digest: Digest) -> None:
        emit(event="digest", vms=len(digest.lines))


async def main(database_url: str, libvirt_uri: str, t0: str, epoch: float, seconds: float) -> None:
    settings = Settings(
        libvirt_uri=libvirt_uri,
        libvirt_uri_explicit=True,
        data_dir=Path("/var/tmp"),
        database_url=database_url,
    )
    clock = SimulatedClock(datetime.fromisoformat(t0), epoch, speed=600.0)
    async with build_core(settings, allow_demo=False) as core:
        core = replace(core, clock=clock)
        service = build_scheduler(core, PrintingReporter(), lease_ttl=timedelta(seconds=2))
        await service.start()
        leading = None
        end = time.time() + seconds
        while time.time() < end:
            if service.is_leader != leading:
                leading = service.is_leader
                emit(event="leader" if leading else "follower", token=service.token)
            await service.tick()
            await asyncio.sleep(0.05)
        await service.stop()


if __name__ == "__main__":
    url, uri, t0, epoch, seconds = sys.argv[1:6]
    asyncio.run(main(url, uri, t0, float(epoch), float(seconds)))
