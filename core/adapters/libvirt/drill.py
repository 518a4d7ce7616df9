"""``DrillLab`` on libvirt and QEMU: restore points booted as isolated throwaway VMs.

A throwaway VM lives in one private directory under /var/tmp (``snapbot-drill-…``): its new
qcow2 disks (written through ``qemu-nbd`` before it boots, so every drill has its own
copy-on-write image and the original's files are never opened), its UEFI variables and its
serial console's log. Its XML comes from ``domain_copy.drill_domain``: new name and UUID, no
network, no passed-through device, a display nobody can connect to, and a drill mark in its
``<metadata>``. It is started as a *transient* domain: never autostarted, nothing of it stays
defined once destroyed. When the drill's block ends, whatever happened, the VM is destroyed and
the directory removed; a snapbot killed meanwhile leaves a VM whose mark lets the next one's
``sweep_leftovers`` remove it (and never another VM).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import libvirt
import libvirt_qemu

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import DEFAULT_TEMP_ROOT, is_local
from core.adapters.libvirt.domain_copy import (
    DRILL_METADATA_TAG,
    DRILL_NAMESPACE,
    DrillDomain,
    drill_domain,
)
from core.adapters.libvirt.errors import DiskAccessFailed, DiskAccessNotLocal
from core.adapters.libvirt.nbd import NbdDiskWriter, QemuNbdServer, connect
from core.domain.backups import DiskWriter
from core.domain.drills import DRILL_VM_PREFIX, DrillFailed, ReadyKind, ReadySignal
from core.ports import DrillGuest

logger = logging.getLogger(__name__)

T = TypeVar("T")

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
QEMU_IMG_TIMEOUT = 120
# QEMU (a system libvirtd's runs as libvirt-qemu) must reach the images and the console log
# inside; nobody else may list the directory.
_DIR_MODE = 0o711
_POLL_SECONDS = 0.5
_AGENT_TIMEOUT = 3
_CONSOLE_TAIL_LINES = 8
_CONSOLE_SCAN_BYTES = 1 << 20


def has_guest_agent(domain_xml: str) -> bool:
    return any(
        channel.find(f"target[@name='{GUEST_AGENT_CHANNEL}']") is not None
        for channel in ET.fromstring(domain_xml).iterfind("devices/channel")
    )


def has_display(domain_xml: str) -> bool:
    return any(
        g.get("type") in ("vnc", "spice")
        for g in ET.fromstring(domain_xml).iterfind("devices/graphics")
    )


def ppm_to_png(ppm: bytes) -> bytes:
    """A binary PPM (``P6``, what QEMU's screendump gives) as PNG: Slack shows PNG, not PPM."""
    fields: list[bytes] = []
    position = 0
    while len(fields) < 4:
        while position < len(ppm) and ppm[position : position + 1].isspace():
            position += 1
        if ppm[position : position + 1] == b"#":
            position = ppm.index(b"\n", position) + 1
            continue
        end = position
        while end < len(ppm) and not ppm[end : end + 1].isspace():
            end += 1
        fields.append(ppm[position:end])
        position = end
    if fields[0] != b"P6":
        raise ValueError(f"not a binary PPM image (magic {fields[0]!r})")
    width, height, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    if maxval != 255:
        raise ValueError(f"PPM with {maxval} levels per colour; only 255 is read")
    pixels = ppm[position + 1 : position + 1 + width * height * 3]
    if len(pixels) != width * height * 3:
        raise ValueError("the PPM image is cut short")
    stride = width * 3
    raw = b"".join(b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _qemu_img_create(path: Path, size: int) -> None:
    try:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
            capture_output=True,
            check=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
        )
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or "").strip().replace("\n", "; ")
        raise DiskAccessFailed(f"qemu-img create failed: {message}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskAccessFailed(f"qemu-img create failed: {exc}") from exc


def _console_tail(path: Path, lines: int = _CONSOLE_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\r", "")
    kept = [line for line in text.split("\n") if line.strip()]
    return "\n".join(kept[-lines:])


class _Throwaway:
    """One throwaway VM, for the drill's block (``ThrowawayVm``)."""

    def __init__(
        self,
        lab: LibvirtDrillLab,
        name: str,
        vm_uuid: str,
        domain: DrillDomain,
        directory: Path,
    ) -> None:
        self._lab = lab
        self.name = name
        self.uuid = vm_uuid
        self._domain = domain
        self._directory = directory
        self._servers: list[QemuNbdServer] = []
        self._writers: dict[str, NbdDiskWriter] = {}
        self._started_at: float | None = None
        self.created = False

    @property
    def disks(self) -> Mapping[str, DiskWriter]:
        return dict(self._writers)

    def open_writers(self) -> None:
        for target, path in self._domain.disk_paths.items():
            socket = self._directory / f"{target}.sock"
            self._servers.append(
                QemuNbdServer.start(path, socket, image_format="qcow2", writable=True)
            )
            handle = connect(socket, "", read_only=False)
            self._writers[target] = NbdDiskWriter(handle, f"{self.name} {target}")

    def close_writers(self, *, flush: bool) -> list[str]:
        """Close every writer and stop every qemu-nbd (QEMU cannot open an image qemu-nbd
        holds); the servers that did not exit cleanly."""
        try:
            if flush:
                for writer in self._writers.values():
                    writer.flush()
        finally:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
        failed = []
        for server in self._servers:
            server.stop()
            if server.process.returncode not in (0, None):
                failed.append(f"{server.image} (exit status {server.process.returncode})")
        self._servers.clear()
        return failed

    async def start(self) -> None:
        failed = await self._lab._blocking(lambda: self.close_writers(flush=True))
        if failed:
            raise DiskAccessFailed(f"qemu-nbd did not close cleanly: {', '.join(failed)}")
        xml = self._domain.xml

        def create(conn: Any) -> None:
            conn.createXML(xml, 0)

        # Marked created before the call: a call that timed out may still have started it,
        # and the block's end must then look for it.
        self.created = True
        await self._lab._conn.run(create, mutating=True, vm=self.name)
        self._started_at = time.monotonic()

    async def wait_ready(self, signal: ReadySignal, within: float) -> float:
        if self._started_at is None:
            raise DrillFailed(f"{self.name} was never started")
        deadline = self._started_at + within
        log = Path(self._domain.console_log)
        scanned = 0
        pending = ""
        last_seen = ""
        pattern = re.compile(signal.argument) if signal.kind is ReadyKind.CONSOLE else None
        while True:
            state = await self._lab._conn.run(self._state, mutating=False, vm=self.name)
            if state is not None:
                raise DrillFailed(
                    f"the restored VM stopped {time.monotonic() - self._started_at:.0f} s "
                    f"after it was started ({state}) before {signal.describe()}"
                    + self._tail_text(log)
                )
            if pattern is not None:
                text, scanned = await self._lab._blocking(
                    functools.partial(self._read_log, log, scanned)
                )
                pending = (pending + text)[-_CONSOLE_SCAN_BYTES:]
                lines = pending.split("\n")
                # The last piece may be a line still being written: matched now, and again
                # (complete) on the next pass.
                if any(pattern.search(line) for line in lines):
                    return time.monotonic() - self._started_at
                pending = lines[-1]
            else:
                ready, seen = await self._lab._conn.run(
                    lambda conn: self._ask_agent(conn, signal), mutating=False, vm=self.name
                )
                if ready:
                    return time.monotonic() - self._started_at
                last_seen = seen or last_seen
            if time.monotonic() >= deadline:
                seen_text = f"; last seen: {last_seen}" if last_seen else ""
                raise DrillFailed(
                    f"the restored VM was not ready within {within:.0f} s: no sign of "
                    f"{signal.describe()}{seen_text}" + self._tail_text(log)
                )
            await asyncio.sleep(_POLL_SECONDS)

    def _tail_text(self, log: Path) -> str:
        tail = _console_tail(log)
        return f"; its console's last lines:\n{tail}" if tail else "; its console printed nothing"

    @staticmethod
    def _read_log(log: Path, offset: int) -> tuple[str, int]:
        try:
            with log.open("rb") as f:
                f.seek(offset)
                data = f.read(_CONSOLE_SCAN_BYTES)
        except FileNotFoundError:
            return "", offset
        return data.decode("utf-8", "replace").replace("\r", ""), offset + len(data)

    def _state(self, conn: Any) -> str | None:
        """None while it runs; otherwise what it is instead."""
        try:
            dom = conn.lookupByUUIDString(self.uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "it is gone: it shut down, crashed or rebooted"
            raise
        state, reason = dom.state()
        if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
            return None
        return f"state {state}, reason {reason}"

    def _ask_agent(self, conn: Any, signal: ReadySignal) -> tuple[bool, str]:
        """(ready, what was seen) through the guest agent."""
        dom = conn.lookupByUUIDString(self.uuid)
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', _AGENT_TIMEOUT, 0)
        except libvirt.libvirtError as exc:
            return False, f"the guest agent does not answer ({exc.get_error_message()})"
        if signal.kind is ReadyKind.AGENT:
            return True, ""
        command = {
            "execute": "guest-exec",
            "arguments": {
                "path": "/bin/sh",
                "arg": ["-c", signal.argument],
                "capture-output": True,
            },
        }
        try:
            answer = libvirt_qemu.qemuAgentCommand(dom, json.dumps(command), _AGENT_TIMEOUT, 0)
            pid = json.loads(answer)["return"]["pid"]
            status_request = json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}})
            # Ten seconds per try: the drill's own deadline decides how long to keep trying.
            for _ in range(50):
                status = json.loads(
                    libvirt_qemu.qemuAgentCommand(dom, status_request, _AGENT_TIMEOUT, 0)
                )["return"]
                if status.get("exited"):
                    break
                time.sleep(0.2)
            else:
                return False, f"`{signal.argument}` was still running"
        except libvirt.libvirtError as exc:
            return False, f"running `{signal.argument}` failed ({exc.get_error_message()})"
        except (KeyError, ValueError) as exc:
            return False, f"the guest agent's answer could not be read ({exc})"
        code = status.get("exitcode")
        if code == 0:
            return True, ""
        output = _decoded(status.get("err-data")) or _decoded(status.get("out-data"))
        return False, f"`{signal.argument}` exited with {code}" + (
            f": {output.strip()[-300:]}" if output.strip() else ""
        )

    async def screenshot(self) -> bytes | None:
        if not self._domain.has_display or self._started_at is None:
            return None

        def shoot(conn: Any) -> tuple[str, bytes]:
            dom = conn.lookupByUUIDString(self.uuid)
            stream = conn.newStream(0)
            try:
                mime = dom.screenshot(stream, 0, 0)
                chunks = []
                while True:
                    data = stream.recv(256 * 1024)
                    if not isinstance(data, bytes) or not data:
                        break
                    chunks.append(data)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            return str(mime), b"".join(chunks)

        try:
            mime, data = await self._lab._conn.run(shoot, mutating=False, vm=self.name)
        except Exception as exc:
            # A drill is judged by its ready signal; a missing picture is noted, not a failure.
            logger.warning("no screenshot of %s: %s", self.name, exc)
            return None
        if data.startswith(b"\x89PNG"):
            return data
        try:
            return await self._lab._blocking(lambda: ppm_to_png(data))
        except ValueError as exc:
            logger.warning("the screenshot of %s (%s) could not be read: %s", self.name, mime, exc)
            return None


def _decoded(text: object) -> str:
    if not isinstance(text, str):
        return ""
    try:
        return base64.b64decode(text).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


class LibvirtDrillLab:
    """The production ``DrillLab``: needs snapbot on the VMs' host (a local libvirt URI)."""

    def __init__(
        self,
        connection: LibvirtConnection,
        *,
        owner: str | None = None,
        temp_root: Path = DEFAULT_TEMP_ROOT,
        workers: int = 2,
    ) -> None:
        self._conn = connection
        # Written into each throwaway VM's mark: which snapbot made it, for whoever finds it.
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._temp_root = temp_root
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drill-lab")

    async def close(self) -> None:
        self._pool.shutdown(wait=False)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def inspect(self, domain_xml: str) -> DrillGuest:
        return DrillGuest(
            has_agent=has_guest_agent(domain_xml), has_display=has_display(domain_xml)
        )

    @asynccontextmanager
    async def throwaway_vm(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        blobs: Mapping[str, bytes],
        *,
        name: str,
    ) -> AsyncIterator[_Throwaway]:
        if not is_local(self._conn.uri):
            raise DiskAccessNotLocal(self._conn.uri)
        if not name.startswith(DRILL_VM_PREFIX):
            raise ValueError(f"a throwaway VM's name starts with {DRILL_VM_PREFIX}: {name}")
        vm_uuid = str(uuid_module.uuid4())

        def make_directory() -> Path:
            path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._temp_root))
            path.chmod(_DIR_MODE)
            _own_like(path, self._temp_root)
            return path

        directory = await self._blocking(make_directory)
        throwaway: _Throwaway | None = None
        try:
            domain = drill_domain(
                domain_xml,
                sizes.keys(),
                name=name,
                uuid=vm_uuid,
                directory=str(directory),
                started_at=datetime.now(UTC).isoformat(),
                owner=self._owner,
            )
            throwaway = _Throwaway(self, name, vm_uuid, domain, directory)
            nvram = blobs.get("nvram")

            def create_files() -> None:
                for target, path in domain.disk_paths.items():
                    _qemu_img_create(Path(path), sizes[target])
                    _own_like(Path(path), directory)
                if nvram is not None and domain.nvram_path is not None:
                    Path(domain.nvram_path).write_bytes(nvram)
                    _own_like(Path(domain.nvram_path), directory)
                assert throwaway is not None
                throwaway.open_writers()

            await self._blocking(create_files)
            yield throwaway
        finally:
            await asyncio.shield(self._tear_down(throwaway, directory))

    async def _tear_down(self, throwaway: _Throwaway | None, directory: Path) -> None:
        """Every step runs even when an earlier one fails; the first failure is raised once
        all have run (a VM still defined is worth a loud error)."""
        steps: list[Callable[[], Awaitable[object]]] = []
        if throwaway is not None:
            steps.append(lambda: self._blocking(lambda: throwaway.close_writers(flush=False)))
            if throwaway.created:
                steps.append(lambda: self._remove_domain(throwaway.uuid, throwaway.name))
        steps.append(lambda: self._blocking(lambda: shutil.rmtree(directory, ignore_errors=True)))
        failure: BaseException | None = None
        for step in steps:
            try:
                await step()
            except Exception as exc:
                logger.error("removing a drill's throwaway VM: %s", exc)
                failure = failure or exc
        if failure is not None:
            raise failure

    async def _remove_domain(self, vm_uuid: str, name: str) -> None:
        def remove(conn: Any) -> None:
            try:
                dom = conn.lookupByUUIDString(vm_uuid)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                raise
            _destroy_and_undefine(dom)

        await self._conn.run(remove, mutating=True, vm=name)

    async def sweep_leftovers(self, older_than: timedelta) -> list[str]:
        if not is_local(self._conn.uri):
            return []
        limit = datetime.now(UTC) - older_than
        temp_root = self._temp_root

        def sweep(conn: Any) -> tuple[list[str], set[str], set[str]]:
            removed: list[str] = []
            alive: set[str] = set()
            gone: set[str] = set()
            for dom in conn.listAllDomains(0):
                name = dom.name()
                if not name.startswith(DRILL_VM_PREFIX):
                    continue
                used = _directories_used(dom.XMLDesc(0))
                try:
                    mark = ET.fromstring(
                        dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, DRILL_NAMESPACE, 0)
                    )
                    started = datetime.fromisoformat(mark.get("started", ""))
                except (libvirt.libvirtError, ET.ParseError, ValueError):
                    # Not marked by snapbot: not ours to remove, nor the files it uses.
                    alive.update(used)
                    continue
                if started > limit:
                    alive.update(used)
                    continue
                _destroy_and_undefine(dom)
                removed.append(name)
                gone.add(mark.get("directory", ""))
            return removed, alive, gone

        removed, alive, gone = await self._conn.run(sweep, mutating=True)

        def sweep_directories() -> None:
            # The removed VMs' directories, and those of drills that died before their VM
            # started or after it went (old enough); only snapbot's own, in its temporary root.
            cutoff = time.time() - older_than.total_seconds()
            for path in temp_root.glob(f"{DRILL_VM_PREFIX}*"):
                if str(path) in alive or not path.is_dir() or path.is_symlink():
                    continue
                with contextlib.suppress(OSError):
                    if str(path) in gone or path.stat().st_mtime < cutoff:
                        shutil.rmtree(path, ignore_errors=True)
                        logger.warning("removed a drill's leftover directory %s", path)

        await self._blocking(sweep_directories)
        for name in removed:
            logger.warning("removed the leftover throwaway VM %s of a drill", name)
        return removed


def _directories_used(domain_xml: str) -> set[str]:
    """The directories of a domain's disk images, UEFI variables and file-backed devices."""
    root = ET.fromstring(domain_xml)
    paths = [s.get("file") or s.get("path") for s in root.iterfind("devices/*/source")]
    paths.append(root.findtext("os/nvram"))
    return {str(Path(p.strip()).parent) for p in paths if p and p.strip()}


def _own_like(path: Path, reference: Path) -> None:
    """Give ``path`` the owner of ``reference``: QEMU runs as the user owning the temporary
    root (a session libvirtd's user) and must open the images and write the console log. A
    system libvirtd relabels the images itself at start (dynamic_ownership), and chown is only
    allowed to root anyway."""
    wanted = reference.stat()
    mine = path.stat()
    if (mine.st_uid, mine.st_gid) != (wanted.st_uid, wanted.st_gid):
        with contextlib.suppress(PermissionError):
            os.chown(path, wanted.st_uid, wanted.st_gid)


def _destroy_and_undefine(dom: Any) -> None:
    if dom.isActive():
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            # It may have stopped by itself between the two calls.
            if dom.isActive():
                raise
            logger.debug("destroy of a stopped throwaway VM: %s", exc)
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


__all__ = ["DRILL_METADATA_TAG", "LibvirtDrillLab", "has_guest_agent", "ppm_to_png"]
