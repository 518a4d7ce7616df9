"""snapbot against raw virsh on the TCG test guest, and what the event loop feels meanwhile.

Measures, over N rounds on a fresh guest:
- snapshot with memory and restore (revert + resume), through snapbot's services and with
  ``virsh snapshot-create-as`` / ``virsh snapshot-revert``: snapbot's overhead is the catalogue,
  the locks, the free-space check and the audit around the same libvirt calls;
- the event loop's lag while snapbot works (a probe that sleeps 10 ms and records how late it
  wakes): every libvirt call must run off the loop, so this stays small;
- Slack acknowledgement latency: 50 signed slash commands sent at once while a restore runs.

Run with ``make bench`` (it sets up libvirtd and the guest like ``make test``). Prints one line
per figure and a JSON summary last.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.bootstrap import wire
from core.catalogue.db import open_database
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.operation import Actor
from tests.fakes.slack import FakeSlack
from tests.slack.harness import ADMIN, running_bot
from tests.system import daemon
from tests.system.guest.guest import create_disk, domain_xml, wait_for_counter

# The system tests' own libvirtd (a session daemon of the snapbot-test user), never the
# machine's: a benchmark must not touch a hypervisor's real VMs either.
URI = daemon.URI
ROUNDS = 5
ACTOR = Actor(user="bench", via="bench")


class LagProbe:
    """Sleeps ``interval`` in a loop and records how much later than asked it woke up."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(loop.time() - start - self.interval)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(work: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


def virsh(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True)
    return time.perf_counter() - start


@asynccontextmanager
async def guest(guest_dir: Path) -> AsyncIterator[str]:
    workdir = Path("/var/tmp/snapbot-bench") / uuid.uuid4().hex[:8]
    workdir.mkdir(parents=True)
    name = f"snapbot-bench-{workdir.name}"
    create_disk(workdir / "disk.qcow2")
    daemon.give_to_test_user(workdir.parent)
    daemon.give_to_test_user(workdir)
    daemon.give_to_test_user(workdir / "disk.qcow2")
    conn = libvirt.open(URI)
    dom = conn.defineXML(
        domain_xml(
            name,
            kernel=guest_dir / "vmlinuz",
            initrd=guest_dir / "initrd.img",
            disk=workdir / "disk.qcow2",
            serial_log=workdir / "serial.log",
        )
    )
    dom.create()
    wait_for_counter(workdir / "serial.log", after_offset=0, timeout=60)
    try:
        yield name
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        conn.close()
        shutil.rmtree(workdir, ignore_errors=True)


def summary(label: str, values: list[float]) -> dict[str, float]:
    result = {"median_s": statistics.median(values), "max_s": max(values)}
    print(f"{label:<34} median {result['median_s']:.3f} s   max {result['max_s']:.3f} s")
    return result


async def main(guest_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with open_database(f"sqlite://{tmp}/bench.db"), guest(guest_dir) as vm:
            hv = LibvirtHypervisor(LibvirtConnection(URI, workers=4))
            settings = Settings(URI, True, Path(tmp), f"sqlite://{tmp}/bench.db")
            core = wire(
                settings, hv, TortoiseCatalogue(SystemClock()), SystemClock(), libvirt_uri=URI
            )
            v_create, v_revert, s_create, s_restore = [], [], [], []
            for n in range(ROUNDS):
                v_create.append(virsh("snapshot-create-as", vm, f"virsh-{n}"))
                v_revert.append(virsh("snapshot-revert", vm, f"virsh-{n}", "--running"))
            for n in range(ROUNDS):
                virsh("snapshot-delete", vm, f"virsh-{n}")
            with LagProbe() as probe:
                for n in range(ROUNDS):
                    s_create.append(
                        await timed(
                            lambda n=n: core.snapshots.create_snapshot(vm, f"b-{n}", actor=ACTOR)
                        )
                    )
                    s_restore.append(
                        await timed(
                            lambda n=n: core.snapshots.restore(
                                vm, f"b-{n}", actor=ACTOR, safety_snapshot=False
                            )
                        )
                    )
            results["virsh_snapshot"] = summary("virsh snapshot-create-as", v_create)
            results["snapbot_snapshot"] = summary("snapbot snapshot (memory+disk)", s_create)
            results["virsh_revert"] = summary("virsh snapshot-revert --running", v_revert)
            results["snapbot_restore"] = summary("snapbot restore (no safety)", s_restore)
            lag = probe.lags
            results["loop_lag"] = {
                "p99_ms": percentile(lag, 0.99) * 1000,
                "max_ms": max(lag) * 1000,
                "samples": len(lag),
            }
            lagged = results["loop_lag"]
            print(
                f"{'event-loop lag during snapbot ops':<34} p99 {lagged['p99_ms']:.1f} ms"
                f"   max {lagged['max_ms']:.1f} ms   ({len(lag)} samples)"
            )

            async with FakeSlack() as slack, running_bot(core, slack) as bot:
                restore = asyncio.create_task(
                    core.snapshots.restore(vm, "b-0", actor=ACTOR, safety_snapshot=True)
                )
                await asyncio.sleep(0.2)
                answers = await asyncio.gather(
                    *(bot.command("/snapshot list", user=ADMIN) for _ in range(50))
                )
                await restore
                acks = [a.seconds for a in answers]
                assert all(a.status == 200 for a in answers)
                results["slack_ack"] = {
                    "p50_ms": statistics.median(acks) * 1000,
                    "max_ms": max(acks) * 1000,
                    "requests": len(acks),
                }
                ack = results["slack_ack"]
                print(
                    f"{'Slack ack, 50 at once mid-restore':<34} p50 "
                    f"{ack['p50_ms']:.0f} ms   max {ack['max_ms']:.0f} ms"
                )
                await bot.idle()
            await hv.close()
    return results


if __name__ == "__main__":
    guest_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".build/guest").resolve()
    daemon.start_daemon()
    try:
        print(json.dumps(asyncio.run(main(guest_dir)), indent=2))
    finally:
        if not daemon.SHARED:
            daemon.stop_daemon()
            shutil.rmtree(daemon.BASE, ignore_errors=True)
