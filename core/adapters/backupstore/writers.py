"""Who is writing to (or restoring from) the store right now, so garbage collection spares
every chunk they may need.

Each writer holds an exclusive ``flock`` on its own file in ``.writers/`` for as long as it
runs. The kernel drops the lock when the process dies however it dies, so garbage collection
tells a live writer (lock held) from the file of a killed one (lock free: removed) without
trusting pids or clocks of other hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.adapters.backupstore.files import TEMP_SUFFIX

WRITERS_DIR = ".writers"
_SUFFIX = ".writer"


@contextmanager
def registered_writer(root: Path, purpose: str) -> Iterator[int]:
    """Registers a writer for the ``with`` block; yields its start time (ns since the epoch).
    Every chunk it creates or touches afterwards is at least that young."""
    directory = root / WRITERS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}-{secrets.token_hex(6)}"
    temp = directory / f".{name}{TEMP_SUFFIX}"
    final = directory / f"{name}{_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # Locked before it gets the name garbage collection looks at: a file GC can see is
        # never unlocked while its writer lives.
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose}
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        # The start time is the file's own time stamp: the clock that stamps the chunks this
        # writer touches (the kernel's coarse clock, an NFS server's), not this process's.
        started_ns = os.fstat(fd).st_mtime_ns
        os.replace(temp, final)
        yield started_ns
    finally:
        final.unlink(missing_ok=True)
        temp.unlink(missing_ok=True)
        os.close(fd)


def oldest_running_writer(root: Path) -> int | None:
    """Start time (ns) of the oldest writer still running; removes files of dead writers."""
    directory = root / WRITERS_DIR
    if not directory.is_dir():
        return None
    oldest: int | None = None
    for path in directory.glob(f"*{_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                started = os.fstat(fd).st_mtime_ns
                oldest = started if oldest is None else min(oldest, started)
                continue
            path.unlink(missing_ok=True)  # its process died without unregistering
        finally:
            os.close(fd)
    return oldest


def filesystem_now(root: Path) -> int:
    """The store's clock: the time stamp a file created now gets (ns since the epoch).
    Chunk ages are compared with it, never with this process's clock, which runs ahead of the
    kernel's coarse file stamps and may disagree with a file server's."""
    directory = root / WRITERS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".clock-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"0")
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
