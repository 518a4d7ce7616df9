"""``DiskAccess`` on libvirt and QEMU: VMs' disks as raw bytes over NBD, for the backup store.

- A running (or paused) VM is read through a libvirt backup job in pull mode without
  ``<incremental>``: QEMU exports each disk as it was when the job started (a copy-before-write
  scratch file keeps the old data the guest overwrites meanwhile), over an NBD unix socket. No
  checkpoint and so no dirty bitmap is ever made: a bitmap in a qcow2 makes QEMU refuse every
  internal snapshot revert (reference §13), and snapbot's full snapshots are internal.
- A shut-off VM's images, and an internal snapshot's disk state, are served by ``qemu-nbd``.
- A restore writes through ``qemu-nbd`` on the VM's qcow2 images (their internal snapshots stay)
  or on new images of a VM defined when the restore ends.

Every libvirt call goes through the ``LibvirtConnection``'s pool; subprocesses and NBD set-up
run on this adapter's own small pool. The readers and writers handed out block by design: the
store calls them from its own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.domain_copy import copy_domain, is_backed_up, with_uuid
from core.adapters.libvirt.errors import DiskAccessFailed, DiskAccessNotLocal
from core.adapters.libvirt.nbd import NbdDiskReader, NbdDiskWriter, QemuNbdServer, connect
from core.domain.backups import Consistency, DiskExport, DiskReader, DiskWriter, RestoreTarget
from core.domain.vm import Vm
from core.errors import Conflict, InvalidInput

logger = logging.getLogger(__name__)

T = TypeVar("T")

QEMU_IMG_TIMEOUT = 120
JOB_END_TIMEOUT = 60.0
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
# Sockets and scratch files of one view live in a fresh directory here: /var/tmp, not /tmp,
# because a scratch file holds every block the guest overwrites while the view is read (it can
# grow large; /tmp is often a small tmpfs), and a system libvirtd's QEMU (libvirt-qemu) and a
# session one (its user) can both enter it.
DEFAULT_TEMP_ROOT = Path("/var/tmp")
_TEMP_PREFIX = "snapbot-nbd-"
# QEMU creates the backup job's socket and scratch files in the directory, as whatever user it
# runs as, which snapbot cannot always chown to: so write and search for everyone, but not
# read (nobody else can list the random names inside), sticky (nobody else can remove or
# replace what is there). Only qemu-nbd views, which snapbot itself serves, stay 0700.
_SHARED_DIR_MODE = 0o1733
_PRIVATE_DIR_MODE = 0o700


def is_local(uri: str) -> bool:
    """A libvirt URI on this machine: qemu:///system, qemu:///session (also with ?socket=),
    qemu+unix:///…. Anything with a host, or another transport or driver, is not."""
    parts = urlsplit(uri)
    return parts.scheme in ("qemu", "qemu+unix") and not parts.hostname


@dataclass(frozen=True)
class _DiskInfo:
    target: str
    kind: str  # libvirt's <disk type>
    path: str | None
    image_format: str


def _backup_socket(dom: Any) -> str | None:
    """The NBD socket of the VM's backup job (None: it has none). Which socket a job exports
    on is what tells snapbot's jobs from others'."""
    try:
        xml = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_BACKUP:
            return None
        raise
    server = ET.fromstring(xml).find("server")
    return None if server is None else server.get("socket")


def _disks_to_copy(domain_xml: str) -> list[_DiskInfo]:
    """The disks a backup holds (see ``is_backed_up``) that have a source."""
    found = []
    for disk in ET.fromstring(domain_xml).iterfind("devices/disk"):
        if not is_backed_up(disk):
            continue
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        kind = disk.get("type", "file")
        path = None
        if source is not None:
            path = source.get("file") or source.get("dev")
        if source is None or (kind in ("file", "block") and not path):
            continue  # an empty drive holds nothing
        found.append(
            _DiskInfo(
                target=target.get("dev", "") if target is not None else "",
                kind=kind,
                path=path,
                image_format=(driver.get("type") if driver is not None else None) or "raw",
            )
        )
    return found


def _local_image(vm: str, disk: _DiskInfo, why: str) -> str:
    """The host path of a disk served by qemu-nbd; network and pool volumes have none here."""
    if disk.kind not in ("file", "block") or disk.path is None:
        raise DiskAccessFailed(
            f"disk {disk.target} is a {disk.kind} disk: snapbot reads and writes only file and "
            f"block disks {why}",
            vm=vm,
        )
    return disk.path


def _has_guest_agent(domain_xml: str) -> bool:
    return any(
        channel.find(f"target[@name='{GUEST_AGENT_CHANNEL}']") is not None
        for channel in ET.fromstring(domain_xml).iterfind("devices/channel")
    )


def _nvram_path(domain_xml: str) -> str | None:
    text = ET.fromstring(domain_xml).findtext("os/nvram")
    return text.strip() if text and text.strip() else None


def _tpm_note(domain_xml: str) -> str:
    if ET.fromstring(domain_xml).find("devices/tpm/backend[@type='emulator']") is None:
        return ""
    return "the TPM's state is not kept: a restore starts the VM with an empty TPM"


def _backup_xml(socket: Path, scratch_dir: Path, disks: list[_DiskInfo], skipped: list[str]) -> str:
    root = ET.Element("domainbackup", mode="pull")
    ET.SubElement(root, "server", transport="unix", socket=str(socket))
    listed = ET.SubElement(root, "disks")
    for disk in disks:
        element = ET.SubElement(
            listed, "disk", name=disk.target, backup="yes", type="file", exportname=disk.target
        )
        # Random names: the directory is writable by others (see _SHARED_DIR_MODE), so a name
        # nobody can guess is what keeps a planted file or symlink out of QEMU's way.
        scratch = scratch_dir / f"{disk.target}-{secrets.token_hex(8)}.scratch"
        ET.SubElement(element, "scratch", file=str(scratch))
    for target in skipped:
        ET.SubElement(listed, "disk", name=target, backup="no")
    return ET.tostring(root, encoding="unicode")


def _qemu_img(*args: str) -> str:
    try:
        return subprocess.run(
            ["qemu-img", *args],
            capture_output=True,
            check=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT,
        ).stdout
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or "").strip().replace("\n", "; ")
        raise DiskAccessFailed(f"qemu-img {args[0]} failed: {message}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskAccessFailed(f"qemu-img {args[0]} failed: {exc}") from exc


def _virtual_size(path: str, image_format: str) -> int:
    info = json.loads(_qemu_img("info", "-U", "--output=json", "-f", image_format, path))
    return int(info["virtual-size"])


class _Servers:
    """The qemu-nbd servers and NBD handles of one view or restore, torn down together."""

    def __init__(self) -> None:
        self.servers: list[QemuNbdServer] = []
        self.readers: dict[str, NbdDiskReader] = {}
        self.writers: dict[str, NbdDiskWriter] = {}

    def close(self) -> list[str]:
        """Close every handle and stop every server; the servers that did not exit cleanly."""
        for disk in [*self.readers.values(), *self.writers.values()]:
            disk.close()
        failed = []
        for server in self.servers:
            server.stop()
            if server.process.returncode not in (0, None):
                failed.append(f"{server.image} (exit status {server.process.returncode})")
        return failed


class LibvirtDiskAccess:
    """The production ``DiskAccess``: needs snapbot on the VM's host (a local libvirt URI)."""

    def __init__(
        self,
        connection: LibvirtConnection,
        *,
        temp_root: Path = DEFAULT_TEMP_ROOT,
        workers: int = 4,
    ) -> None:
        self._conn = connection
        self._temp_root = temp_root
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="disk-access")

    async def close(self) -> None:
        self._pool.shutdown(wait=False)

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _check_local(self) -> None:
        if not is_local(self._conn.uri):
            raise DiskAccessNotLocal(self._conn.uri)

    def _make_temp_dir(self, mode: int) -> Path:
        path = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=self._temp_root))
        path.chmod(mode)
        return path

    async def _remove_temp_dir(self, path: Path) -> None:
        await self._blocking(lambda: shutil.rmtree(path, ignore_errors=True))

    @staticmethod
    async def _clean_up(*steps: Callable[[], Awaitable[object]]) -> None:
        """Run every step, in order, even when one fails or the caller is cancelled: a
        cancelled ``finally`` would otherwise skip the rest (a backup job left running, a
        temporary directory left behind). Raises the first failure once all have run."""

        async def run_all() -> None:
            failure: BaseException | None = None
            for step in steps:
                try:
                    await step()
                except Exception as exc:
                    logger.warning("cleaning up after a disk view or restore failed: %s", exc)
                    failure = failure or exc
            if failure is not None:
                raise failure

        await asyncio.shield(run_all())

    # -- reading ---------------------------------------------------------------------------

    @asynccontextmanager
    async def backup_view(self, vm: Vm) -> AsyncIterator[DiskExport]:
        self._check_local()

        def look(conn: Any) -> tuple[bool, str, str]:
            dom = conn.lookupByUUIDString(vm.uuid)
            return (
                bool(dom.isActive()),
                dom.XMLDesc(0),
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
            )

        active, live_xml, inactive_xml = await self._conn.run(look, mutating=False, vm=vm.name)
        blobs, nvram_note = await self._blobs(inactive_xml)
        notes = [n for n in (nvram_note, _tpm_note(inactive_xml)) if n]
        if active:
            async with self._job_view(vm, live_xml) as (readers, consistency, note):
                if note:
                    notes.insert(0, note)
                yield DiskExport(readers, inactive_xml, consistency, blobs, "; ".join(notes))
        else:
            disks = _disks_to_copy(inactive_xml)
            images = {
                d.target: (_local_image(vm.name, d, "of a shut-off VM"), d.image_format)
                for d in disks
            }
            # No --force-share: qemu-nbd holds the images' lock, so the VM cannot be started
            # (QEMU cannot get its write lock) and change them while they are read.
            async with self._nbd_readers(images, snapshot=None, share=False) as readers:
                yield DiskExport(
                    readers, inactive_xml, Consistency.SHUT_OFF, blobs, "; ".join(notes)
                )

    async def _blobs(self, domain_xml: str) -> tuple[dict[str, bytes], str]:
        """The UEFI variables as blob ``nvram``, or a note saying why they are not kept."""
        path = _nvram_path(domain_xml)
        if path is None:
            return {}, ""

        def read() -> tuple[dict[str, bytes], str]:
            try:
                return {"nvram": Path(path).read_bytes()}, ""
            except FileNotFoundError:
                # Never started: libvirt creates it from the template at the first start.
                return {}, ""
            except OSError as exc:
                # The disks are what matters; without the variables a restored VM starts
                # with the template's (boot entries lost, the firmware's fallback boots it).
                return {}, (
                    f"the UEFI variables ({path}) were not kept: {exc.strerror}; a restore "
                    "starts with the firmware's defaults"
                )

        return await self._blocking(read)

    @asynccontextmanager
    async def _job_view(
        self, vm: Vm, live_xml: str
    ) -> AsyncIterator[tuple[dict[str, DiskReader], Consistency, str]]:
        disks = _disks_to_copy(live_xml)
        if not disks:
            raise DiskAccessFailed("no writable disk to back up", vm=vm.name)
        copied = {d.target for d in disks}
        skipped = [
            t.get("dev", "")
            for t in ET.fromstring(live_xml).iterfind("devices/disk/target")
            if t.get("dev") not in copied
        ]
        agent = _has_guest_agent(live_xml)
        temp = await self._blocking(lambda: self._make_temp_dir(_SHARED_DIR_MODE))
        socket = temp / f"backup-{secrets.token_hex(8)}.sock"
        backup_xml = _backup_xml(socket, temp, disks, skipped)
        started = False
        readers: dict[str, NbdDiskReader] = {}
        try:

            def begin(conn: Any) -> tuple[Consistency, str]:
                dom = conn.lookupByUUIDString(vm.uuid)
                state = dom.state()[0]
                frozen, note = False, ""
                if state != libvirt.VIR_DOMAIN_RUNNING:
                    note = "the VM was paused, so its filesystems could not be frozen"
                elif not agent:
                    note = "the VM has no guest agent channel, so its filesystems were not frozen"
                else:
                    try:
                        dom.fsFreeze()
                        frozen = True
                    except libvirt.libvirtError as exc:
                        note = f"freezing the filesystems failed ({exc.get_error_message()})"
                try:
                    dom.backupBegin(backup_xml, None, 0)
                finally:
                    if frozen:
                        # Thawed at once: the job's view is fixed when it starts, and a guest
                        # frozen any longer stalls its applications.
                        try:
                            dom.fsThaw()
                        except libvirt.libvirtError as exc:
                            logger.error("could not thaw the filesystems of %s: %s", vm.name, exc)
                return (Consistency.FROZEN if frozen else Consistency.CRASH_CONSISTENT), note

            consistency, note = await self._conn.run(begin, mutating=True, vm=vm.name)
            started = True

            def open_all() -> None:
                for disk in disks:
                    handle = connect(socket, disk.target, read_only=True)
                    readers[disk.target] = NbdDiskReader(handle, f"{vm.name} {disk.target}")

            await self._blocking(open_all)
            yield dict(readers), consistency, note
        finally:

            def close_readers() -> None:
                for reader in readers.values():
                    reader.close()

            await self._clean_up(
                lambda: self._blocking(close_readers),
                # Also when starting it seemed to fail: a call that timed out may still have
                # started the job, and a job left running keeps its scratch file growing.
                lambda: self._end_job(vm, socket, expected=started),
                lambda: self._remove_temp_dir(temp),
            )

    async def _end_job(self, vm: Vm, socket: Path, *, expected: bool) -> None:
        """End the backup job this view started: the one exporting on ``socket``. A job on
        another socket is someone else's (another tool's, or one a dead snapbot left, which
        recovery ends by its own evidence): it is the reason our job could not start, and is
        left alone."""

        def end(conn: Any) -> None:
            dom = conn.lookupByUUIDString(vm.uuid)
            if not dom.isActive():
                return  # destroyed meanwhile: the job went with its QEMU
            if _backup_socket(dom) != str(socket):
                if expected:
                    logger.warning("the backup job of %s had already ended", vm.name)
                return
            dom.abortJob()
            # abortJob only asks: the job ends when QEMU has cancelled its block jobs. Wait for
            # that, so the caller's next step (a snapshot, another backup) finds no job.
            deadline = time.monotonic() + JOB_END_TIMEOUT
            while _backup_socket(dom) is not None:
                if time.monotonic() > deadline:
                    raise DiskAccessFailed(
                        f"the backup job did not end within {JOB_END_TIMEOUT:.0f} s of its abort",
                        vm=vm.name,
                    )
                time.sleep(0.05)

        await self._conn.run(end, mutating=True, vm=vm.name)

    async def end_leftover_job(self, vm: Vm) -> bool | None:
        """A backup job is snapbot's when its NBD socket lies in one of snapbot's temporary
        directories: the evidence that lets a recovery end it without touching another
        tool's job (virtnbdbackup's, say)."""

        def call(conn: Any) -> tuple[bool | None, str | None]:
            dom = conn.lookupByUUIDString(vm.uuid)
            if not dom.isActive():
                return False, None  # no QEMU, no job
            socket = _backup_socket(dom)
            if socket is None or not Path(socket).parent.name.startswith(_TEMP_PREFIX):
                return False, None
            dom.abortJob()
            # The job ends after abortJob returns (QEMU drops the export and its scratch
            # file): wait for it, so the next backup of the VM is not refused as "busy".
            deadline = time.monotonic() + JOB_END_TIMEOUT
            while _backup_socket(dom) is not None:
                if time.monotonic() > deadline:
                    return None, None
                time.sleep(0.1)
            return True, str(Path(socket).parent)

        self._check_local()
        ended, directory = await self._conn.run(call, mutating=True, vm=vm.name)
        if directory is not None:
            await self._remove_temp_dir(Path(directory))
        return ended

    @asynccontextmanager
    async def _nbd_readers(
        self, images: Mapping[str, tuple[str, str]], *, snapshot: str | None, share: bool
    ) -> AsyncIterator[dict[str, DiskReader]]:
        temp = await self._blocking(lambda: self._make_temp_dir(_PRIVATE_DIR_MODE))
        servers = _Servers()
        try:

            def start() -> None:
                for target, (path, image_format) in images.items():
                    socket = temp / f"{target}.sock"
                    servers.servers.append(
                        QemuNbdServer.start(
                            path,
                            socket,
                            image_format=image_format,
                            snapshot=snapshot,
                            force_share=share,
                        )
                    )
                    handle = connect(socket, "", read_only=True)
                    servers.readers[target] = NbdDiskReader(handle, f"{path} ({target})")

            await self._blocking(start)
            yield dict(servers.readers)
        finally:
            await self._clean_up(
                lambda: self._blocking(servers.close), lambda: self._remove_temp_dir(temp)
            )

    @asynccontextmanager
    async def snapshot_view(self, vm: Vm, libvirt_name: str) -> AsyncIterator[DiskExport]:
        self._check_local()

        def look(conn: Any) -> tuple[bool, str]:
            dom = conn.lookupByUUIDString(vm.uuid)
            snapshot = dom.snapshotLookupByName(libvirt_name)
            return bool(dom.isActive()), snapshot.getXMLDesc(0)

        active, snapshot_xml = await self._conn.run(
            look, mutating=False, vm=vm.name, snapshot=libvirt_name
        )
        root = ET.fromstring(snapshot_xml)
        domain = root.find("domain")
        if domain is None:
            raise DiskAccessFailed(
                f"snapshot {libvirt_name} has no configuration of its own to read", vm=vm.name
            )
        domain_xml = ET.tostring(domain, encoding="unicode")
        not_in_snapshot = {
            d.get("name") for d in root.iterfind("disks/disk") if d.get("snapshot") == "no"
        }
        images = {}
        for disk in _disks_to_copy(domain_xml):
            if disk.target in not_in_snapshot:
                continue
            path = _local_image(vm.name, disk, "holding an internal snapshot")
            if disk.image_format != "qcow2":
                raise DiskAccessFailed(
                    f"disk {disk.target} is {disk.image_format}, which holds no internal snapshot",
                    vm=vm.name,
                )
            images[disk.target] = (path, disk.image_format)
        # --force-share while the VM runs: its QEMU holds the write lock. Reading the snapshot
        # beside it is safe: an internal snapshot's clusters are copy-on-write (the running
        # QEMU never changes them, it writes elsewhere), and snapbot holds the VM's lock, so
        # nobody deletes the snapshot or reverts to it while it is read. Shut off, no sharing:
        # the lock then keeps the VM from starting meanwhile.
        async with self._nbd_readers(images, snapshot=libvirt_name, share=active) as readers:
            yield DiskExport(readers, domain_xml, Consistency.SNAPSHOT, {}, _tpm_note(domain_xml))

    # -- writing ---------------------------------------------------------------------------

    @asynccontextmanager
    async def restore_in_place(
        self, vm: Vm, sizes: Mapping[str, int]
    ) -> AsyncIterator[RestoreTarget]:
        self._check_local()

        def look(conn: Any) -> tuple[int, str]:
            dom = conn.lookupByUUIDString(vm.uuid)
            return dom.state()[0], dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

        state, inactive_xml = await self._conn.run(look, mutating=False, vm=vm.name)
        if state != libvirt.VIR_DOMAIN_SHUTOFF:
            raise Conflict(
                f"VM {vm.name} is {_state_name(state)}: shut it off before restoring its disks "
                "in place"
            )
        disks = {d.target: d for d in _disks_to_copy(inactive_xml)}
        unknown = sorted(set(sizes) - disks.keys())
        if unknown:
            raise InvalidInput(
                f"VM {vm.name} has no writable disk {', '.join(unknown)} "
                f"(its writable disks: {', '.join(sorted(disks)) or 'none'})"
            )
        chosen = {t: disks[t] for t in sizes}
        images = {t: _local_image(vm.name, d, "to restore into") for t, d in chosen.items()}

        def resize_all() -> None:
            # Every size is checked before any image changes.
            growing = []
            for target, disk in chosen.items():
                current = _virtual_size(images[target], disk.image_format)
                if sizes[target] < current:
                    raise DiskAccessFailed(
                        f"disk {target} is {current} bytes, the restore point's is "
                        f"{sizes[target]}: snapbot does not shrink an image (it would cut its "
                        "internal snapshots' data); restore as a new VM instead",
                        vm=vm.name,
                    )
                if sizes[target] > current:
                    if disk.kind != "file":
                        raise DiskAccessFailed(
                            f"disk {target} ({disk.kind}) is {current} bytes, the restore "
                            f"point's is {sizes[target]}: grow it first",
                            vm=vm.name,
                        )
                    growing.append(target)
            for target in growing:
                _qemu_img(
                    "resize", "-f", chosen[target].image_format, images[target], str(sizes[target])
                )

        await self._blocking(resize_all)
        async with self._nbd_writers(
            {t: (images[t], chosen[t].image_format) for t in chosen}, vm.name
        ) as writers:
            yield RestoreTarget(vm.name, vm.uuid, writers, dict(images))

    @asynccontextmanager
    async def _nbd_writers(
        self, images: Mapping[str, tuple[str, str]], vm_name: str
    ) -> AsyncIterator[dict[str, DiskWriter]]:
        temp = await self._blocking(lambda: self._make_temp_dir(_PRIVATE_DIR_MODE))
        servers = _Servers()
        try:

            def start() -> None:
                for target, (path, image_format) in images.items():
                    socket = temp / f"{target}.sock"
                    servers.servers.append(
                        QemuNbdServer.start(path, socket, image_format=image_format, writable=True)
                    )
                    handle = connect(socket, "", read_only=False)
                    servers.writers[target] = NbdDiskWriter(handle, f"{path} ({target})")

            await self._blocking(start)
            yield dict(servers.writers)

            def finish() -> None:
                for writer in servers.writers.values():
                    writer.flush()

            await self._blocking(finish)
            failed = await self._blocking(servers.close)
            if failed:
                raise DiskAccessFailed(
                    f"qemu-nbd did not close cleanly: {', '.join(failed)}", vm=vm_name
                )
        finally:
            await self._clean_up(
                lambda: self._blocking(servers.close), lambda: self._remove_temp_dir(temp)
            )

    @asynccontextmanager
    async def restore_as_new(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        *,
        new_name: str | None,
        blobs: Mapping[str, bytes],
    ) -> AsyncIterator[RestoreTarget]:
        self._check_local()
        copy = copy_domain(domain_xml, sizes.keys(), new_name=new_name)
        vm_uuid = copy.uuid or str(uuid_module.uuid4())
        xml = copy.xml if copy.uuid else with_uuid(copy.xml, vm_uuid)

        def check(conn: Any) -> None:
            for lookup, key in ((conn.lookupByName, copy.name), (conn.lookupByUUIDString, vm_uuid)):
                try:
                    found = lookup(key)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    continue
                raise Conflict(
                    f"a VM {found.name()} (UUID {found.UUIDString()}) exists already: restoring "
                    f"{copy.name} would clash with it; restore under a new name, or remove it"
                )

        await self._conn.run(check, mutating=False, vm=copy.name)
        created: list[Path] = []

        nvram = blobs.get("nvram")
        if nvram is not None and not copy.nvram_path:
            logger.warning(
                "restored VM %s: its configuration names no UEFI variables file, so the "
                "backed-up variables are not written (libvirt starts it with the template's)",
                copy.name,
            )

        def create_files() -> None:
            wanted = [Path(p) for p in copy.disk_paths.values()]
            if nvram is not None and copy.nvram_path:
                wanted.append(Path(copy.nvram_path))
            for path in wanted:
                if path.exists() or path.is_symlink():
                    raise Conflict(f"{path} exists already: a restore never overwrites a file")
                if not path.parent.is_dir():
                    raise DiskAccessFailed(f"the directory {path.parent} is gone", vm=copy.name)
            for target, path_text in copy.disk_paths.items():
                path = Path(path_text)
                # Recorded before creating: a half-created file is removed too.
                created.append(path)
                _qemu_img("create", "-q", "-f", "qcow2", str(path), str(sizes[target]))
                _own_like_parent(path)
            if nvram is not None and copy.nvram_path:
                path = Path(copy.nvram_path)
                with path.open("xb") as f:
                    created.append(path)
                    f.write(nvram)
                    f.flush()
                    os.fsync(f.fileno())
                path.chmod(0o600)
                _own_like_parent(path)

        def remove_files() -> None:
            for path in created:
                path.unlink(missing_ok=True)

        try:
            await self._blocking(create_files)
            images = {t: (p, "qcow2") for t, p in copy.disk_paths.items()}
            async with self._nbd_writers(images, copy.name) as writers:
                yield RestoreTarget(copy.name, vm_uuid, writers, dict(copy.disk_paths))
            await self._conn.run(lambda conn: conn.defineXML(xml), mutating=True, vm=copy.name)
        except BaseException:
            await asyncio.shield(self._blocking(remove_files))
            raise
        for note in copy.notes:
            logger.info("restored VM %s: %s", copy.name, note)


def _own_like_parent(path: Path) -> None:
    """Give a new file the owner of its directory: the VM's files live where its QEMU's user
    owns them (a session libvirtd's user, or libvirt-qemu), and QEMU must open them. Not root:
    chown is not allowed, and a system libvirtd relabels the images itself when it starts the
    VM (dynamic_ownership)."""
    parent = path.parent.stat()
    mine = path.stat()
    if (mine.st_uid, mine.st_gid) != (parent.st_uid, parent.st_gid):
        with contextlib.suppress(PermissionError):
            os.chown(path, parent.st_uid, parent.st_gid)


_STATE_NAMES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def _state_name(state: int) -> str:
    return _STATE_NAMES.get(state, f"in state {state}")
