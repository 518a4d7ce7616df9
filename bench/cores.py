"""snapbot's core over a libvirt URI and a catalogue, built as ``core/bootstrap.py`` wires it for
``snapbot run`` (the tests' way: tests/system/test_backups_real_guest.py)."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.bootstrap import wire
from core.catalogue.db import open_database
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.hosts import HostConfig
from core.services.facade import Core
from core.services.fleet import FleetWatch

T = TypeVar("T")


class TimedConnection(LibvirtConnection):
    """A ``LibvirtConnection`` that adds up the time spent inside libvirt calls and inside
    other blocking host work (qemu-img, statvfs): what is left of an operation's time is
    snapbot's own work."""

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        self.libvirt_seconds = 0.0
        self.libvirt_calls = 0
        self.blocking_seconds = 0.0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.libvirt_seconds = self.blocking_seconds = 0.0
            self.libvirt_calls = 0

    def _call(
        self, fn: Callable[[Any], T], mutating: bool, vm: str | None, snapshot: str | None
    ) -> T:
        start = time.perf_counter()
        try:
            return super()._call(fn, mutating, vm, snapshot)
        finally:
            with self._lock:
                self.libvirt_seconds += time.perf_counter() - start
                self.libvirt_calls += 1

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn()
            finally:
                with self._lock:
                    self.blocking_seconds += time.perf_counter() - start

        return await super().run_blocking(timed)


class TimedCatalogue:
    """Stands in for a catalogue, adding up the time its coroutine methods take (a commit
    each, for writes): the catalogue's share of snapbot's own work."""

    def __init__(self, inner: TortoiseCatalogue) -> None:
        self._inner = inner
        self.seconds = 0.0
        self.calls = 0

    def reset(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


@asynccontextmanager
async def catalogue_at(database_url: str) -> AsyncIterator[TortoiseCatalogue]:
    async with open_database(database_url):
        yield TortoiseCatalogue(SystemClock())


@asynccontextmanager
async def snapbot_core(
    uri: str,
    data_dir: Path,
    catalogue: TortoiseCatalogue | TimedCatalogue,
    *,
    store_dir: Path | None = None,
    hosts: Sequence[HostConfig] | None = None,
    workers: int = 4,
    connection: LibvirtConnection | None = None,
) -> AsyncIterator[Core]:
    """A core over ``uri`` (or over each of ``hosts``: a Fleet with per-host limits), with a
    directory backup store at ``store_dir`` when given. ``workers``: libvirt connections, one
    per pool thread (1 for ``test:///<file>``: each connection opens a host of its own)."""
    settings = Settings(
        libvirt_uri=uri,
        libvirt_uri_explicit=True,
        data_dir=data_dir,
        database_url="sqlite://:memory:",
        backup_dir=store_dir,
    )
    connections = []
    store = disks = None
    if store_dir is not None:
        store = DirectoryBackupStore(store_dir, gc_safety_margin=timedelta(0))
    try:
        if hosts is None:
            connection = connection or LibvirtConnection(uri, workers=workers)
            connections.append(connection)
            if store_dir is not None:
                disks = LibvirtDiskAccess(connection)
            core = wire(
                settings,
                LibvirtHypervisor(connection),
                catalogue,
                SystemClock(),
                libvirt_uri=uri,
                store=store,
                disks=disks,
            )
        else:
            members = []
            for host in hosts:
                connection = LibvirtConnection(host.uri, workers=workers)
                connections.append(connection)
                members.append((host, LibvirtHypervisor(connection)))
            core = wire(settings, members, catalogue, SystemClock(), libvirt_uri=uri, store=store)
            # A Fleet refuses each host until its watch reached and reconciled it.
            assert isinstance(core.watch, FleetWatch)
            if not await core.watch.connect_once():
                raise RuntimeError(f"a host did not answer: {core.watch.unreachable()}")
        yield core
    finally:
        if disks is not None:
            await disks.close()
        if store is not None:
            store.close()
        for connection in connections:
            await connection.close()
