"""What ``snapbot doctor`` needs to know about the backup store's directory and this host's
tools, read without writing anything but one test file (removed at once)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
from pathlib import Path

from core.services.doctor import StoreFacts

# What reading and writing VMs' disks needs (core.adapters.libvirt.nbd): the NBD server, and
# Debian's libnbd binding, linked into the virtual environment by the Makefile.
_PROGRAMS = ("qemu-nbd", "qemu-img")
_MODULES = {"nbd": "python3-libnbd (the nbd module)"}


def _facts(directory: Path) -> StoreFacts:
    missing = [p for p in _PROGRAMS if shutil.which(p) is None]
    missing += [
        what for module, what in _MODULES.items() if importlib.util.find_spec(module) is None
    ]
    probe = directory / f".doctor-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        writable = True
    except OSError:
        writable = False
    try:
        stat = os.statvfs(directory)
        free: int | None = stat.f_bavail * stat.f_frsize
        device: int | None = directory.stat().st_dev
    except OSError:
        free, device = None, None
    return StoreFacts(writable, free, device, tuple(missing))


def _device(path: str) -> int | None:
    try:
        return Path(path).stat().st_dev
    except OSError:
        return None


class DirectoryStoreProbe:
    async def facts(self, directory: Path) -> StoreFacts:
        return await asyncio.to_thread(_facts, directory)

    async def device_of(self, path: str) -> int | None:
        return await asyncio.to_thread(_device, path)
