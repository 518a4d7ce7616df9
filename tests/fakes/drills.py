"""In-memory stand-ins for restore drills: ``MemoryDrills`` (the catalogue's ``DrillStore``,
mixed into ``MemoryCatalogue``) and ``FakeDrillLab`` (``DrillLab``: throwaway VMs as files in
a directory, readiness scripted per test)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from core.adapters.backupstore.image_files import FileDiskWriter
from core.domain.backups import DiskWriter
from core.domain.drills import DRILL_VM_PREFIX, Drill, DrillFailed, DrillResult, ReadySignal
from core.ports import DrillGuest


class MemoryDrills:
    """``DrillStore`` over a dict; its state lives on the catalogue object."""

    @property
    def _drill_rows(self) -> dict[str, Drill]:
        rows: dict[str, Drill] = self.__dict__.setdefault("_drill_rows_state", {})
        return rows

    async def begin_drill(self, drill: Drill, *, stale_after: timedelta) -> bool:
        await asyncio.sleep(0)
        for row in self._drill_rows.values():
            if (
                row.vm_uuid == drill.vm_uuid
                and row.result is DrillResult.RUNNING
                and row.started_at > drill.started_at - stale_after
            ):
                return False
        self._drill_rows[drill.id] = replace(
            drill, result=DrillResult.RUNNING, finished_at=None, screenshot=None
        )
        return True

    async def finish_drill(self, drill: Drill) -> None:
        await asyncio.sleep(0)
        if drill.id in self._drill_rows:
            self._drill_rows[drill.id] = replace(
                self._drill_rows[drill.id],
                result=drill.result,
                finished_at=drill.finished_at,
                ready_seconds=drill.ready_seconds,
                error=drill.error,
                screenshot=drill.screenshot,
            )

    async def drills(self, vm_uuid: str | None = None, limit: int = 50) -> list[Drill]:
        await asyncio.sleep(0)
        rows = [d for d in self._drill_rows.values() if vm_uuid is None or d.vm_uuid == vm_uuid]
        rows.sort(key=lambda d: (d.started_at, d.id), reverse=True)
        return [replace(d, screenshot=None) for d in rows[:limit]]

    async def drill_screenshot(self, drill_id: str) -> bytes | None:
        await asyncio.sleep(0)
        row = self._drill_rows.get(drill_id)
        return None if row is None else row.screenshot

    async def last_passed_drills(self) -> dict[str, Drill]:
        await asyncio.sleep(0)
        best: dict[str, Drill] = {}
        for row in sorted(self._drill_rows.values(), key=lambda d: (d.started_at, d.id)):
            if row.result is DrillResult.PASSED:
                best[row.vm_uuid] = replace(row, screenshot=None)
        return best

    async def abandon_drills(self, started_before: datetime, error: str) -> int:
        await asyncio.sleep(0)
        count = 0
        for key, row in list(self._drill_rows.items()):
            if row.result is DrillResult.RUNNING and row.started_at < started_before:
                self._drill_rows[key] = replace(row, result=DrillResult.FAILED, error=error)
                count += 1
        return count


@dataclass
class Script:
    """How the fake's next throwaway VMs behave."""

    # Seconds until ready (None: never; the wait fails with ``failure``).
    ready_after: float | None = 0.5
    failure: str = "no sign of the console line"
    screenshot: bytes | None = b"\x89PNG\r\n\x1a\nfake"
    start_error: Exception | None = None
    # Awaited inside wait_ready, so a test can hold a drill while it checks something.
    gate: asyncio.Event | None = None
    # Set when a throwaway VM starts waiting for its signal.
    waiting: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakeThrowaway:
    name: str
    directory: Path
    sizes: Mapping[str, int]
    script: Script
    writers: dict[str, FileDiskWriter] = field(default_factory=dict)
    files: list[BinaryIO] = field(default_factory=list)
    started: bool = False
    signal: ReadySignal | None = None

    @property
    def disks(self) -> Mapping[str, DiskWriter]:
        return dict(self.writers)

    async def start(self) -> None:
        if self.script.start_error is not None:
            raise self.script.start_error
        for handle in self.files:
            handle.close()
        self.writers.clear()
        self.started = True

    async def wait_ready(self, signal: ReadySignal, within: float) -> float:
        self.signal = signal
        self.script.waiting.set()
        if self.script.gate is not None:
            await self.script.gate.wait()
        if self.script.ready_after is None or self.script.ready_after > within:
            raise DrillFailed(
                f"the restored VM was not ready within {within:.0f} s: {self.script.failure}"
            )
        return self.script.ready_after

    async def screenshot(self) -> bytes | None:
        return self.script.screenshot

    def disk_bytes(self, target: str) -> bytes:
        return (self.directory / f"{target}.img").read_bytes()


class FakeDrillLab:
    """``DrillLab`` whose throwaway VMs are a directory of raw files; what a test inspects:
    ``made`` (every throwaway, its disks' content kept in ``contents``) and ``live`` (those
    not yet removed)."""

    def __init__(self, guest: DrillGuest | None = None) -> None:
        self.guest = guest or DrillGuest(has_agent=False, has_display=True)
        self.script = Script()
        self.made: list[FakeThrowaway] = []
        self.live: set[str] = set()
        self.contents: dict[str, dict[str, bytes]] = {}
        self.swept: list[timedelta] = []
        self.root = Path(tempfile.mkdtemp(prefix="fake-drill-lab-"))

    def inspect(self, domain_xml: str) -> DrillGuest:
        return self.guest

    @asynccontextmanager
    async def throwaway_vm(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        blobs: Mapping[str, bytes],
        *,
        name: str,
    ) -> AsyncIterator[FakeThrowaway]:
        assert name.startswith(DRILL_VM_PREFIX), name
        directory = self.root / name
        directory.mkdir()
        vm = FakeThrowaway(name, directory, dict(sizes), self.script)
        for target, size in sizes.items():
            handle = (directory / f"{target}.img").open("w+b")
            handle.truncate(size)
            vm.files.append(handle)
            vm.writers[target] = FileDiskWriter(handle, size, fresh=True)
        self.made.append(vm)
        self.live.add(name)
        try:
            yield vm
        finally:
            for opened in vm.files:
                opened.close()
            self.contents[name] = {
                p.stem: p.read_bytes() for p in directory.iterdir() if p.suffix == ".img"
            }
            shutil.rmtree(directory)
            self.live.discard(name)

    async def sweep_leftovers(self, older_than: timedelta) -> list[str]:
        self.swept.append(older_than)
        return []

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
