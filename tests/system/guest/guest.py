"""The counter guest the system tests run: its domain XML, its disk, and reading what it prints.

The guest (built by ``build.sh``) prints one line a second on its serial console::

    SNAPBOT-COUNTER mem=12 disk=11 boot=3f2a9c01

``mem`` lives only in the guest's memory, ``disk`` is what the first bytes of its disk held before
this tick wrote ``mem`` there, ``boot`` changes on every cold boot. So after restoring a snapshot
taken while running, the same ``boot`` continues from the snapshot's ``mem`` (memory came back)
with ``disk == mem - 1`` (the disk came back with it); after a cold boot the counter continues from
whatever the disk held.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_LINE = re.compile(r"SNAPBOT-COUNTER mem=(\d+) disk=(\d+) boot=([0-9a-f]+)")


@dataclass(frozen=True)
class CounterLine:
    mem: int
    disk: int
    boot: str


def create_disk(path: Path, size_mib: int = 64) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_mib}M"], check=True
    )


def domain_xml(
    name: str,
    *,
    kernel: Path,
    initrd: Path,
    disk: Path,
    serial_log: Path,
    memory_mib: int = 256,
    fill_mib: int = 0,
    command_socket: Path | None = None,
) -> str:
    # TCG, not KVM: nested KVM fails on the CI machines. No NIC, no graphics, no USB: the less
    # emulated hardware, the faster TCG boots and the smaller the saved memory state.
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = "1"
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(kernel)
    ET.SubElement(os_el, "initrd").text = str(initrd)
    cmdline = "console=ttyS0 quiet loglevel=0 panic=-1"
    if fill_mib:
        cmdline += f" snapbot_fill={fill_mib}"
    ET.SubElement(os_el, "cmdline").text = cmdline
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    disk_el = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk_el, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk_el, "source", file=str(disk))
    ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    # append: a restore or restart must not truncate what the test already read offsets into.
    ET.SubElement(serial, "source", path=str(serial_log), append="on")
    ET.SubElement(serial, "target", port="0")
    if command_socket is not None:
        # The guest's ttyS1, which its init reads commands from (see guest_write). QEMU listens
        # on the socket; libvirt's default for a bind socket is not to wait for a client.
        channel = ET.SubElement(devices, "serial", type="unix")
        ET.SubElement(channel, "source", mode="bind", path=str(command_socket))
        ET.SubElement(channel, "target", port="1")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def read_disk_counter(disk: Path) -> int:
    """The counter in the first bytes of ``disk`` as the image holds it, read on the host with
    qemu-io: not through the guest's page cache, which a restore brings back with the memory.
    ``-U`` shares the image with the QEMU that has it open (the guest syncs after each write,
    so the image's metadata is current), ``-r`` never writes to it."""
    out = subprocess.run(
        ["qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -v 0 16", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dump = next((line for line in out.splitlines() if line.startswith("00000000:")), None)
    if dump is None:
        raise AssertionError(f"qemu-io printed no dump of {disk}:\n{out}")
    data = bytes(int(h, 16) for h in dump.split(":", 1)[1].split()[:16])
    digits = data.split(b"\n", 1)[0]
    # A disk the guest has not written yet reads as zeros; the guest counts that as 0 too.
    return int(digits) if digits.isdigit() else 0


def read_counter_lines(serial_log: Path, *, after_offset: int = 0) -> list[CounterLine]:
    """Complete counter lines written after ``after_offset`` bytes of the log."""
    try:
        with serial_log.open("rb") as f:
            f.seek(after_offset)
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace")
    # A line cut by a kill or by the end of the read is not trusted: only newline-ended ones count.
    complete = text[: text.rfind("\n") + 1]
    return [
        CounterLine(int(m.group(1)), int(m.group(2)), m.group(3)) for m in _LINE.finditer(complete)
    ]


def wait_for_restored_count(
    serial_log: Path, *, after_offset: int, at_most: int, timeout: float = 60.0
) -> CounterLine:
    """The first line after ``after_offset`` counting ``at_most`` or less: a restore's proof.
    The guest that is being restored may still print a line or two after the offset (it is
    stopped a moment later), but those count higher; only the restored memory counts back."""
    return wait_for_counter(
        serial_log, after_offset=after_offset, timeout=timeout, predicate=lambda c: c.mem <= at_most
    )


def wait_for_counter(
    serial_log: Path,
    *,
    after_offset: int,
    timeout: float,
    predicate: Callable[[CounterLine], bool] = lambda line: True,
) -> CounterLine:
    """The first counter line after ``after_offset`` that satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        for line in read_counter_lines(serial_log, after_offset=after_offset):
            if predicate(line):
                return line
        if time.monotonic() > deadline:
            tail = serial_log.read_bytes()[-800:] if serial_log.exists() else b"(no log yet)"
            raise AssertionError(
                f"no matching counter line in {serial_log} within {timeout:.0f} s; "
                f"its end reads:\n{tail.decode('utf-8', 'replace')}"
            )
        time.sleep(0.2)


# -- writing known data from inside the guest, reading it back from the host ------------------
#
# The guest's init reads commands from its second serial port, a unix socket in its workdir on
# the host side (``domain_xml(command_socket=...)``), and prints the result on the console. Every
# function here blocks: async tests call them through ``asyncio.to_thread``.

MIB = 1 << 20
COMMAND_SOCKET = "cmd.sock"
_SEED = re.compile(r"[A-Za-z0-9._-]+")
_RESULT = re.compile(r"SNAPBOT-(?:WROTE|ZEROED|ERROR) [^\n]*")


class CommandableGuest(Protocol):
    """What the command functions need of a guest (``tests.system.conftest.Guest`` is one)."""

    serial_log: Path
    command_socket: Path | None


class GuestCommandError(AssertionError):
    """The guest refused a command or its write failed; the message carries its error line."""


def expected_pattern(seed: str, offset_mib: int, count_mib: int) -> bytes:
    """Exactly what ``guest_write(guest, offset_mib, count_mib, seed)`` puts on the disk: MiB
    ``m`` holds ``"snapbot <seed> <m>\\n"`` repeated and cut at 1 MiB (as the guest's
    ``yes ... | head -c 1048576``). ``m`` is the MiB's place on the disk, so the same seed at
    another offset, or another seed, gives other 4 MiB chunks, and none of them is zero."""
    _check_seed(seed)
    parts = []
    for mib in range(offset_mib, offset_mib + count_mib):
        line = f"snapbot {seed} {mib}\n".encode()
        parts.append((line * (MIB // len(line) + 1))[:MIB])
    return b"".join(parts)


def send_command(guest: CommandableGuest, command: str, *, expect: str, timeout: float) -> str:
    """Send one command line to the guest and wait for ``expect``, its result line on the
    console, written after the log's current end. Raises GuestCommandError on an error line from
    the guest, AssertionError with the log's end if neither comes within ``timeout``."""
    if guest.command_socket is None:
        raise AssertionError("this guest was defined without a command channel")
    offset = _log_size(guest.serial_log)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(guest.command_socket))
        sock.sendall(command.encode() + b"\n")
        # Kept open until the answer: QEMU drops what it has not yet passed to the guest's
        # 16-byte UART when the client hangs up.
        while True:
            for line in _result_lines(guest.serial_log, offset):
                if line == expect:
                    return line
                if line.startswith("SNAPBOT-ERROR"):
                    raise GuestCommandError(f"the guest refused {command!r}: {line}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {expect!r} in {guest.serial_log} within {timeout:.0f} s after sending "
                    f"{command!r}; its end reads:\n{_log_tail(guest.serial_log)}"
                )
            time.sleep(0.1)


def guest_write(
    guest: CommandableGuest, offset_mib: int, count_mib: int, seed: str, timeout: float = 120.0
) -> None:
    """Make the guest write ``expected_pattern(seed, offset_mib, count_mib)`` at ``offset_mib``
    MiB of its disk and flush it to the image file. MiB 0 is the counter's: refused."""
    _check_seed(seed)
    send_command(
        guest,
        f"write {offset_mib} {count_mib} {seed}",
        expect=f"SNAPBOT-WROTE seed={seed} offset={offset_mib} count={count_mib}",
        timeout=timeout,
    )


def guest_zero(
    guest: CommandableGuest, offset_mib: int, count_mib: int, timeout: float = 120.0
) -> None:
    """Make the guest write zeros over ``count_mib`` MiB from ``offset_mib`` and flush them."""
    send_command(
        guest,
        f"zero {offset_mib} {count_mib}",
        expect=f"SNAPBOT-ZEROED offset={offset_mib} count={count_mib}",
        timeout=timeout,
    )


def disk_virtual_size(disk: Path, fmt: str = "qcow2") -> int:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)["virtual-size"])


def read_disk_range(disk: Path, offset: int, length: int, fmt: str = "qcow2") -> bytes:
    """``length`` bytes from ``offset`` of the disk's content as the image file holds it, read
    on the host (``-U``: the image may be open by a running QEMU; the guest's flush has put its
    metadata in the file). The enclosing MiB-aligned range is converted to a sparse temporary
    file beside the disk, through a raw window (offset, size) over the image: tens of MiB take a
    fraction of a second. Not ``qemu-img dd``: with ``skip`` it cuts the output short."""
    size = disk_virtual_size(disk, fmt)
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"range {offset}+{length} is outside {disk} ({size} bytes)")
    start = offset // MIB * MIB
    end = min(-(-(offset + length) // MIB) * MIB, size)
    # In --image-opts a comma is doubled to stay part of the value.
    path = str(disk).replace(",", ",,")
    window = (
        f"driver=raw,offset={start},size={end - start},file.driver={fmt},"
        f"file.file.driver=file,file.file.filename={path}"
    )
    with tempfile.TemporaryDirectory(dir=disk.parent, prefix=".read-") as tmp:
        out = Path(tmp) / "range.raw"
        subprocess.run(
            ["qemu-img", "convert", "-U", "--image-opts", window, "-O", "raw", str(out)],
            capture_output=True,
            check=True,
        )
        with out.open("rb") as f:
            f.seek(offset - start)
            data = f.read(length)
    if len(data) != length:
        raise AssertionError(f"qemu-img gave {len(data)} bytes of {disk}, not {length}")
    return data


def disk_sha256(disk: Path, fmt: str = "qcow2") -> str:
    """SHA-256 of the whole virtual disk as raw bytes: two images with the same content hash
    the same whatever their allocation. Converted to a temporary raw file beside the disk."""
    with tempfile.TemporaryDirectory(dir=disk.parent, prefix=".hash-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(
            ["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(disk), str(raw)],
            capture_output=True,
            check=True,
        )
        digest = hashlib.sha256()
        with raw.open("rb") as f:
            while chunk := f.read(4 * MIB):
                digest.update(chunk)
    return digest.hexdigest()


def _check_seed(seed: str) -> None:
    # The guest puts the seed in a console line and in the pattern: nothing that splits either.
    if not _SEED.fullmatch(seed):
        raise ValueError(f"seed {seed!r} must match {_SEED.pattern}")


def _log_size(serial_log: Path) -> int:
    return serial_log.stat().st_size if serial_log.exists() else 0


def _log_tail(serial_log: Path) -> str:
    tail = serial_log.read_bytes()[-800:] if serial_log.exists() else b"(no log yet)"
    return tail.decode("utf-8", "replace")


def _result_lines(serial_log: Path, offset: int) -> list[str]:
    with serial_log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    # Only newline-ended lines: a line still being written is read on the next poll.
    complete = text[: text.rfind("\n") + 1]
    return [m.group(0).rstrip("\r") for m in _RESULT.finditer(complete)]
