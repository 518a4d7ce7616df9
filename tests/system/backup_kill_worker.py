"""A snapbot process that takes an incremental snapshot and SIGKILLs itself once the backup has
stored its first new piece in the store: a backup killed mid-way (issue 9). Prints "killing"
just before; exits 3 if the backup ended first."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

from core.adapters.backupstore.chunks import CHUNKS_DIR
from core.bootstrap import build_core
from core.config import Settings
from core.domain.operation import Actor, Stage

ACTOR = Actor(user="U_KILLED", via="slack", team="T1", channel="C_OPS")


def chunk_files(root: Path) -> set[str]:
    chunks = root / CHUNKS_DIR
    if not chunks.exists():
        return set()
    return {p.name for p in chunks.glob("*/*") if len(p.name) == 64}


def die_at_first_new_chunk(root: Path, vm_uuid: str) -> None:
    """Kill this process once a new chunk file exists and the unfinished point's directory
    (no manifest yet) is there: the backup is writing."""
    known = chunk_files(root)
    points = root / "points" / vm_uuid

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if chunk_files(root) - known:
                unfinished = [
                    p for p in points.iterdir() if p.is_dir() and not (p / "manifest.json").exists()
                ]
                print(f"killing with unfinished point {[p.name for p in unfinished]}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()


async def main(database_url: str, uri: str, store: str, vm: str, vm_uuid: str) -> int:
    root = Path(store)
    settings = Settings(
        libvirt_uri=uri,
        libvirt_uri_explicit=True,
        data_dir=Path(database_url.removeprefix("sqlite://")).parent,
        database_url=database_url,
        backup_dir=root,
    )
    async with build_core(settings, allow_demo=False) as core:
        await asyncio.wait_for(core.watch.ready.wait(), 30)
        assert core.backups is not None

        async def progress(reached: Stage) -> None:
            if reached is Stage.READING_DISKS:
                die_at_first_new_chunk(root, vm_uuid)

        result = await core.backups.create_backup(
            vm, "killed-midway", actor=ACTOR, progress=progress
        )
        print(f"the backup ended before the kill: {result.figures}", flush=True)
    return 3


if __name__ == "__main__":
    db, uri, store, vm, vm_uuid = sys.argv[1:6]
    sys.exit(asyncio.run(main(db, uri, store, vm, vm_uuid)))
