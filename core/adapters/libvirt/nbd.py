"""Disks as raw bytes over NBD: ``qemu-nbd`` servers on unix sockets, and the libnbd client
objects the backup store reads (``NbdDiskReader``) and writes (``NbdDiskWriter``) through.

NBD, not reading image files: only QEMU knows qcow2's layout, internal snapshots and a running
backup job's point-in-time view, and it serves all of them the same way. Everything here blocks
(subprocesses, sockets): callers run it on a pool, never on the event loop.
"""

from __future__ import annotations

import bisect
import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import nbd

from core.adapters.libvirt.errors import DiskAccessFailed

# qemu-nbd serves requests of up to 32 MiB; libnbd refuses larger ones before sending them.
_DEFAULT_MAX_REQUEST = 32 * 1024 * 1024
# How much of the disk one block-status request asks about: the store reads 4 MiB chunks in
# order, so mapping a whole gibibyte ahead answers hundreds of ``reads_as_zeros`` calls with one
# round trip, and metadata of a gibibyte is small (QEMU answers from the qcow2 L2 tables).
_MAP_WINDOW = 1024 * 1024 * 1024
# Zero requests carry a 32-bit length.
_MAX_ZERO = 1024 * 1024 * 1024
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0


def connect(socket: Path, export: str, *, read_only: bool) -> Any:
    """A libnbd handle on ``export`` at ``socket``, asking for the allocation map."""
    handle = nbd.NBD()
    handle.set_handle_name(f"snapbot-{export or 'default'}")
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    handle.set_export_name(export)
    try:
        handle.connect_unix(str(socket))
    except nbd.Error as exc:
        raise DiskAccessFailed(f"cannot open NBD export {export!r} at {socket}: {exc}") from exc
    if not read_only and handle.is_read_only():
        raise DiskAccessFailed(f"NBD export {export!r} at {socket} is read-only")
    return handle


def _max_request(handle: Any) -> int:
    try:
        advertised = int(handle.get_block_size(nbd.SIZE_MAXIMUM))
    except nbd.Error:
        advertised = 0
    return min(advertised, _DEFAULT_MAX_REQUEST) if advertised > 0 else _DEFAULT_MAX_REQUEST


class _NbdDisk:
    def __init__(self, handle: Any, name: str) -> None:
        self._handle = handle
        self._name = name
        self._size = int(handle.get_size())
        self._max_request = _max_request(handle)
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise DiskAccessFailed(
                f"{self._name}: range {offset}+{length} is outside the disk ({self._size} bytes)"
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The server is stopped right after anyway; what was flushed is durable.
        with contextlib.suppress(nbd.Error):
            self._handle.shutdown()


class NbdDiskReader(_NbdDisk):
    """A ``DiskReader`` on an NBD export. Holes and zero clusters come from the export's
    ``base:allocation`` map, so the store never reads them."""

    def __init__(self, handle: Any, name: str) -> None:
        super().__init__(handle, name)
        self._has_map = bool(handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION))
        # The map of [0, _mapped_to): extent starts, and for each its end and whether it reads
        # as zeros. Extended forward on demand; a disk's map of a view never changes.
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._zero: list[bool] = []
        self._mapped_to = 0
        self._lock = threading.Lock()

    def reads_as_zeros(self, offset: int, length: int) -> bool:
        self._check_range(offset, length)
        if length == 0:
            return True
        if not self._has_map:
            return False
        end = offset + length
        with self._lock:
            while self._mapped_to < end:
                self._map_more(max(end - self._mapped_to, _MAP_WINDOW))
            index = bisect.bisect_right(self._starts, offset) - 1
            while index < len(self._starts) and self._starts[index] < end:
                # NBD_STATE_ZERO, not HOLE: a hole only says "unallocated", and may still read
                # as data (a backing file's), while ZERO promises zeros whatever the reason.
                if not self._zero[index]:
                    return False
                index += 1
            return True

    def _map_more(self, want: int) -> None:
        start = self._mapped_to
        count = min(want, _MAP_WINDOW * 3, self._size - start)
        found: list[tuple[int, int]] = []

        def extent(metacontext: str, _offset: int, entries: list[int], _err: Any) -> int:
            if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
                found.extend(zip(entries[0::2], entries[1::2], strict=True))
            return 0

        try:
            self._handle.block_status(count, start, extent)
        except nbd.Error as exc:
            raise DiskAccessFailed(f"{self._name}: block status at {start}: {exc}") from exc
        position = start
        for length, flags in found:
            if length <= 0 or position >= self._size:
                break
            stop = min(position + length, self._size)
            self._starts.append(position)
            self._ends.append(stop)
            self._zero.append(bool(flags & nbd.STATE_ZERO))
            position = stop
        if position == start:
            # A server that answers nothing for a range: treat it as data, never as zeros.
            self._starts.append(start)
            self._ends.append(start + count)
            self._zero.append(False)
            position = start + count
        self._mapped_to = position

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        parts = []
        done = 0
        while done < length:
            piece = min(self._max_request, length - done)
            try:
                data = self._handle.pread(piece, offset + done)
            except nbd.Error as exc:
                raise DiskAccessFailed(f"{self._name}: read at {offset + done}: {exc}") from exc
            if len(data) != piece:
                raise DiskAccessFailed(
                    f"{self._name}: short read at {offset + done}: {len(data)} of {piece} bytes"
                )
            parts.append(bytes(data))
            done += piece
        return b"".join(parts)


class NbdDiskWriter(_NbdDisk):
    """A ``DiskWriter`` on a read-write NBD export (qemu-nbd on the VM's own image: writes go
    into its current state and its internal snapshots stay as they were)."""

    def write(self, offset: int, data: bytes) -> None:
        self._check_range(offset, len(data))
        view = memoryview(data)
        done = 0
        while done < len(data):
            piece = min(self._max_request, len(data) - done)
            try:
                self._handle.pwrite(view[done : done + piece], offset + done)
            except nbd.Error as exc:
                raise DiskAccessFailed(f"{self._name}: write at {offset + done}: {exc}") from exc
            done += piece

    def zero(self, offset: int, length: int) -> None:
        self._check_range(offset, length)
        if not self._handle.can_zero():
            for start in range(offset, offset + length, self._max_request):
                self.write(start, bytes(min(self._max_request, offset + length - start)))
            return
        done = 0
        while done < length:
            piece = min(_MAX_ZERO, length - done)
            try:
                # No NBD_CMD_FLAG_NO_HOLE: the server may punch the range out (qcow2 zero
                # clusters, discarded space), which is what restoring a hole should do.
                self._handle.zero(piece, offset + done)
            except nbd.Error as exc:
                raise DiskAccessFailed(f"{self._name}: zero at {offset + done}: {exc}") from exc
            done += piece

    def flush(self) -> None:
        try:
            self._handle.flush()
        except nbd.Error as exc:
            raise DiskAccessFailed(f"{self._name}: flush: {exc}") from exc


class QemuNbdServer:
    """One ``qemu-nbd`` serving one image on a unix socket, until ``stop``."""

    def __init__(self, process: subprocess.Popen[bytes], socket: Path, image: str) -> None:
        self.process = process
        self.socket = socket
        self.image = image

    @classmethod
    def start(
        cls,
        image: str,
        socket: Path,
        *,
        image_format: str,
        writable: bool = False,
        snapshot: str | None = None,
        force_share: bool = False,
    ) -> QemuNbdServer:
        command = [
            "qemu-nbd",
            f"--socket={socket}",
            # Served under the empty name, as qemu-nbd does by default; spelled out because the
            # client asks for it by name.
            "--export-name=",
            # One client, and no --persistent: qemu-nbd exits when snapbot's connection
            # closes, also when snapbot is killed, so a crash leaves no server holding the
            # image's lock (which would keep the VM from starting).
        ]
        if writable:
            # writeback plus the writer's flush: fast, and durable at the end of a restore.
            # Zeros written are unmapped rather than stored: a restored hole stays a hole.
            command += ["--cache=writeback", "--discard=unmap", "--detect-zeroes=unmap"]
        else:
            command.append("--read-only")
        if snapshot is not None:
            command.append(f"--load-snapshot=snapshot.name={snapshot}")
        if force_share:
            # qemu-nbd 7.2 has no --force-share option (qemu-img and qemu-io have -U): the
            # block layer's force-share option, given through --image-opts, is the same thing.
            # QemuOpts values escape a comma by doubling it.
            escaped = image.replace(",", ",,")
            command += [
                "--image-opts",
                f"driver={image_format},file.filename={escaped},force-share=on",
            ]
        else:
            command += [f"--format={image_format}", image]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        server = cls(process, socket, image)
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise DiskAccessFailed(f"qemu-nbd refused {self.image}: {self._stderr()}")
            if self.socket.exists():
                return
            if time.monotonic() > deadline:
                raise DiskAccessFailed(
                    f"qemu-nbd did not open its socket for {self.image} within "
                    f"{SERVER_START_TIMEOUT:.0f} s"
                )
            time.sleep(0.02)

    def _stderr(self) -> str:
        if self.process.stderr is None:
            return "(no message)"
        text = self.process.stderr.read().decode("utf-8", "replace").strip()
        return text.replace("\n", "; ") or f"exit status {self.process.returncode}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.socket.unlink(missing_ok=True)
