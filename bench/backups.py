"""2. Backups into the store (``BackupService`` over the tests' libvirtd, a
``DirectoryBackupStore``, ``LibvirtDiskAccess``), on a running counter guest whose disk is
filled with random bytes (incompressible: compression cannot flatter the throughput) except its
first MiB, the guest's counter:

* full backup throughput (the first backup of the VM), against reading the same image with
  ``qemu-img convert -U -O raw`` into a file beside the store (the floor: every byte read and
  written once, no hashing, no compression);
* incremental after the guest wrote a known amount (``guest_write``: a text pattern, so this
  one compresses well: bytes are reported before compression, "new", and after, "stored"),
  against the ideal, the written amount plus the counter's 4 MiB chunk, which changes every
  second;
* restore throughput (in place, the full disk written back from the store);
* verify throughput (every chunk of the VM's points re-read and re-hashed).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.cores import catalogue_at, snapbot_core
from bench.guests import URI, Guests
from bench.record import Recorder
from core.domain.backups import CHUNK_SIZE
from core.domain.operation import Actor
from tests.system.guest.guest import MIB, guest_write

NAME = "backups"
TITLE = "Backups"
NEEDS_LIBVIRTD = True
ACTOR = Actor(user="bench", via="bench")


def random_image(path: Path, size_mib: int) -> None:
    """A qcow2 of ``size_mib`` whose every MiB but the first holds random bytes."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as out:
        out.write(bytes(MIB))
        for _ in range(size_mib - 1):
            out.write(os.urandom(MIB))
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
        check=True,
    )
    raw.unlink()


def mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


async def run(rec: Recorder, smoke: bool) -> None:
    disk_mib = 64 if smoke else 1024
    written_mib = 8 if smoke else 64
    with Guests(share=smoke) as guests, tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        if smoke:  # the run's shared guest, its disk empty: only that the figures come out
            guest = guests.boot()
        else:
            image = Path(tmp) / "disk.qcow2"
            await asyncio.to_thread(random_image, image, disk_mib)
            guest = guests.boot(disk=image)
        store = Path(tmp) / "store"
        async with (
            catalogue_at(f"sqlite://{tmp}/bench.db") as catalogue,
            snapbot_core(URI, Path(tmp), catalogue, store_dir=store) as core,
        ):
            assert core.backups is not None
            service = core.backups

            copy = Path(tmp) / "qemu-img-copy.raw"
            start = time.perf_counter()
            await asyncio.to_thread(
                subprocess.run,
                ["qemu-img", "convert", "-U", "-O", "raw", str(guest.disk), str(copy)],
                check=True,
            )
            baseline = time.perf_counter() - start
            copy.unlink()
            size = disk_mib * MIB
            rec.figure(
                "qemu-img convert -U -O raw (reference read)", mib_s(size, baseline), "MiB/s"
            )

            full = await service.create_backup(guest.name, "full", actor=ACTOR)
            rec.figure(
                "full backup throughput",
                mib_s(size, full.seconds),
                "MiB/s",
                reference=f"qemu-img convert {mib_s(size, baseline):.0f} MiB/s",
                note="random data, incompressible",
            )
            rec.figure("full backup / qemu-img convert time", full.seconds / baseline, "×")
            rec.details["full"] = {
                "disk_bytes": size,
                "seconds": full.seconds,
                "bytes_read": full.figures.bytes_read,
                "bytes_new": full.figures.bytes_new,
                "bytes_stored": full.figures.bytes_stored,
                "qemu_img_seconds": baseline,
            }

            # Clear of the counter's chunk (MiB 0-3) and chunk-aligned: the ideal is exact.
            at = 8
            start = time.perf_counter()
            await asyncio.to_thread(guest_write, guest, at, written_mib, "bench")
            write_seconds = time.perf_counter() - start
            inc = await service.create_backup(guest.name, "incremental", actor=ACTOR)
            ideal = written_mib * MIB + CHUNK_SIZE
            rec.figure(
                f"incremental after {written_mib} MiB written: time",
                inc.seconds,
                "s",
                reference=f"full backup {full.seconds:.1f} s",
            )
            rec.figure(
                f"incremental after {written_mib} MiB written: new bytes / ideal",
                inc.figures.bytes_new / ideal,
                "×",
                reference=f"ideal {ideal / MIB:.0f} MiB (written + counter chunk)",
                note="before compression",
            )
            rec.figure(
                f"incremental after {written_mib} MiB written: stored",
                inc.figures.bytes_stored / MIB,
                "MiB",
                reference=f"written {written_mib} MiB",
                note="text pattern, compresses well",
            )
            rec.details["incremental"] = {
                "written_bytes": written_mib * MIB,
                "ideal_bytes": ideal,
                "guest_write_seconds": write_seconds,
                "seconds": inc.seconds,
                "bytes_read": inc.figures.bytes_read,
                "bytes_new": inc.figures.bytes_new,
                "bytes_stored": inc.figures.bytes_stored,
            }

            restored = await service.restore_backup(
                guest.name, "incremental", actor=ACTOR, safety_snapshot=False
            )
            rec.figure(
                "restore (in place) throughput",
                mib_s(size, restored.seconds),
                "MiB/s",
                reference=f"qemu-img convert {mib_s(size, baseline):.0f} MiB/s",
            )
            rec.details["restore"] = {
                "seconds": restored.seconds,
                "bytes_written": restored.bytes_written,
            }

            verified = await service.verify(guest.name, None, actor=ACTOR)
            checked = verified.report.bytes_checked
            rec.figure("verify throughput", mib_s(checked, verified.seconds), "MiB/s")
            rec.details["verify"] = {
                "seconds": verified.seconds,
                "bytes_checked": checked,
                "chunks_checked": verified.report.chunks_checked,
                "damaged": len(verified.report.damaged_chunks),
            }
            if verified.report.damaged_chunks or verified.report.missing_chunks:
                raise AssertionError(f"the store is damaged: {verified.report}")
    rec.details["disk_mib"] = disk_mib
    rec.details["store"] = "DirectoryBackupStore on the same filesystem as the image (/var/tmp)"
