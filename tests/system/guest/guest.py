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

import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
