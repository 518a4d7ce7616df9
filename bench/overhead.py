"""1. Overhead over libvirt: a snapshot with memory and a restore of it on a running TCG counter
guest (256 MiB), three ways in interleaved rounds (the order rotates each round, so a drift in
the machine's load hits all three alike):

* snapbot: ``Core.snapshots.create_snapshot`` / ``restore(safety_snapshot=False)``, with its
  catalogue (SQLite), locks, free-space check, audit and operation records;
* direct: the same libvirt-python calls snapbot makes, in this process on one open connection
  (create: ``snapshotCreateXML(ATOMIC)`` + ``getXMLDesc``; restore: ``destroy``,
  ``revertToSnapshot(PAUSED)``, ``resume``): the limit, where only snapbot's own work differs;
* virsh: ``virsh snapshot-create-as`` / ``virsh snapshot-revert --running``, a process and a
  connection each time.

Snapshots are deleted between rounds (not timed), so every round starts from one snapshot-free
image. The event loop's lag is probed while snapbot works."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import libvirt

from bench.cores import TimedCatalogue, TimedConnection, catalogue_at, snapbot_core
from bench.guests import URI, Guests
from bench.record import LagProbe, Recorder, percentile, spread
from core.adapters.libvirt.xml import snapshot_xml
from core.catalogue.store import TortoiseCatalogue
from core.domain.operation import Actor

NAME = "overhead"
TITLE = "Overhead over libvirt"
NEEDS_LIBVIRTD = True
ACTOR = Actor(user="bench", via="bench")
TARGET_MS = 20.0
GUIDE = {"create": "product guide: 5-15 s", "restore": "product guide: 10-30 s"}
WAYS = ("snapbot", "direct", "virsh")


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-q", "-c", URI, *args], check=True, capture_output=True)


async def run(rec: Recorder, smoke: bool) -> None:
    rounds = 1 if smoke else 10
    times: dict[str, dict[str, list[float]]] = {w: {"create": [], "restore": []} for w in WAYS}
    lags: list[float] = []
    # snapbot's time split: inside libvirt calls, in other blocking work, and its own.
    split: dict[str, dict[str, list[float]]] = {
        op: {k: [] for k in ("libvirt", "blocking", "own", "calls", "catalogue", "catalogue_calls")}
        for op in ("create", "restore")
    }
    timed = TimedConnection(URI, workers=4)
    recorded: list[TimedCatalogue] = []

    def timed_catalogue(inner: TortoiseCatalogue) -> TimedCatalogue:
        recorded.append(TimedCatalogue(inner))
        return recorded[0]

    with Guests(share=smoke) as guests, tempfile.TemporaryDirectory() as tmp:
        vm = guests.boot().name
        conn = libvirt.open(URI)
        dom = conn.lookupByName(vm)
        async with (
            catalogue_at(f"sqlite://{tmp}/bench.db") as catalogue,
            snapbot_core(URI, Path(tmp), timed_catalogue(catalogue), connection=timed) as core,
        ):
            for n in range(rounds):
                order = WAYS[n % 3 :] + WAYS[: n % 3]
                for way in order:
                    name = f"{way}-{n}"
                    if way == "snapbot":
                        with LagProbe() as probe:
                            timed.reset()
                            recorded[0].reset()
                            start = time.perf_counter()
                            await core.snapshots.create_snapshot(vm, name, actor=ACTOR)
                            made = time.perf_counter()
                            _account(split["create"], timed, recorded[0], made - start)
                            await core.snapshots.restore(
                                vm, name, actor=ACTOR, safety_snapshot=False
                            )
                            done = time.perf_counter()
                            _account(split["restore"], timed, recorded[0], done - made)
                        lags += probe.lags
                    elif way == "direct":
                        start = time.perf_counter()
                        snap = dom.snapshotCreateXML(
                            snapshot_xml(name, ""), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                        )
                        snap.getXMLDesc(0)
                        made = time.perf_counter()
                        dom.destroy()
                        dom.revertToSnapshot(
                            dom.snapshotLookupByName(name, 0),
                            libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED,
                        )
                        dom.resume()
                        done = time.perf_counter()
                    else:
                        start = time.perf_counter()
                        virsh("snapshot-create-as", vm, name)
                        made = time.perf_counter()
                        virsh("snapshot-revert", vm, name, "--running")
                        done = time.perf_counter()
                    times[way]["create"].append(made - start)
                    times[way]["restore"].append(done - made)
                # Cleanup, not timed: snapbot's own through snapbot (its catalogue follows).
                for way in WAYS:
                    name = f"{way}-{n}"
                    if way == "snapbot":
                        await core.snapshots.delete_snapshot(vm, name, actor=ACTOR)
                    else:
                        dom.snapshotLookupByName(name, 0).delete(0)
        conn.close()

    for op in ("create", "restore"):
        for way in WAYS:
            values = times[way][op]
            rec.details[f"{way}_{op}_s"] = spread(values)
            rec.figure(
                f"{op}: {way} median",
                statistics.median(values),
                "s",
                reference=GUIDE[op] if way == "snapbot" else None,
            )
            rec.figure(f"{op}: {way} p90", percentile(values, 0.9), "s")
        # Paired by round: the same round's load for both.
        diffs = [
            (s - d) * 1000 for s, d in zip(times["snapbot"][op], times["direct"][op], strict=True)
        ]
        overhead = statistics.median(diffs)
        rec.details[f"snapbot_minus_direct_{op}_ms"] = diffs
        rec.figure(
            f"{op}: snapbot − direct calls, median of paired rounds",
            overhead,
            "ms",
            note="dominated by the guest's own variance, see below",
        )
        own = statistics.median(split[op]["own"]) * 1000
        rec.figure(
            f"{op}: snapbot's own work (outside libvirt and qemu-img), median",
            own,
            "ms",
            target=f"≤ {TARGET_MS:.0f} ms",
            met=own <= TARGET_MS,
        )
        rec.figure(
            f"{op}: of which catalogue calls (SQLite, a commit per write), median",
            statistics.median(split[op]["catalogue"]) * 1000,
            "ms",
            note=f"{statistics.median(split[op]['catalogue_calls']):.0f} calls",
        )
        extra = (
            statistics.median(split[op]["libvirt"]) - statistics.median(times["direct"][op])
        ) * 1000
        rec.figure(
            f"{op}: snapbot's libvirt calls − direct calls (medians)",
            extra,
            "ms",
            note=f"{statistics.median(split[op]['calls']):.0f} libvirt calls",
        )
        rec.figure(
            f"{op}: snapbot's other blocking work (qemu-img, statvfs), median",
            statistics.median(split[op]["blocking"]) * 1000,
            "ms",
        )
        rec.details[f"snapbot_split_{op}"] = split[op]
        ratio = statistics.median(times["snapbot"][op]) / statistics.median(times["virsh"][op])
        rec.figure(f"{op}: snapbot / virsh (medians)", ratio, "×")
    rec.figure("event-loop lag during snapbot ops: p99", percentile(lags, 0.99) * 1000, "ms")
    rec.figure("event-loop lag during snapbot ops: max", max(lags) * 1000, "ms")
    rec.details["rounds"] = rounds
    rec.details["guest"] = "TCG counter guest, 256 MiB RAM, 64 MiB qcow2, 1 vCPU"


def _account(
    into: dict[str, list[float]], timed: TimedConnection, catalogue: TimedCatalogue, total: float
) -> None:
    libvirt_s, blocking_s = timed.libvirt_seconds, timed.blocking_seconds
    into["libvirt"].append(libvirt_s)
    into["blocking"].append(blocking_s)
    into["calls"].append(float(timed.libvirt_calls))
    into["own"].append(total - libvirt_s - blocking_s)
    into["catalogue"].append(catalogue.seconds)
    into["catalogue_calls"].append(float(catalogue.calls))
    timed.reset()
    catalogue.reset()
