"""A bot process that SIGKILLs itself at a chosen stage of one operation (issue 7's "snapbot
SIGKILLed at every stage"): ``delay`` seconds after the stage began, or with a negative delay
once libvirt is visibly inside the stage's call. Exits 3 if the operation ended first."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

import libvirt

from core.bootstrap import build_core
from core.config import Settings
from core.domain.operation import Actor, Stage
from core.services.pruning import policy_from_counts

ACTOR = Actor(user="U_KILLED", via="slack", team="T1", channel="C_OPS")


def die_in(seconds: float) -> None:
    if seconds <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGKILL)).start()


def die_inside(uri: str, vm: str, stage: str) -> None:
    """Die once libvirt is visibly inside the stage's call: the guest paused for its memory
    save, or QEMU started again to load the memory of a revert."""

    def watch() -> None:
        conn = libvirt.open(uri)
        dom = conn.lookupByName(vm)
        inside = (
            (lambda s: s == libvirt.VIR_DOMAIN_PAUSED)
            if "saving" in stage or "safety" in stage
            else (lambda s: s != libvirt.VIR_DOMAIN_SHUTOFF)
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not inside(dom.state()[0]):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


async def main(
    database_url: str, uri: str, vm: str, action: str, label: str, stage: str, delay: float
) -> int:
    settings = Settings(
        libvirt_uri=uri,
        libvirt_uri_explicit=True,
        data_dir=Path("/var/tmp"),
        database_url=database_url,
    )
    async with build_core(settings, allow_demo=False) as core:
        await asyncio.wait_for(core.watch.ready.wait(), 30)

        async def progress(reached: Stage) -> None:
            if reached.value == stage:
                print(f"stage {stage}", flush=True)
                if delay < 0:
                    die_inside(uri, vm, stage)
                else:
                    die_in(delay)

        if action == "create":
            await core.snapshots.create_snapshot(vm, label, actor=ACTOR, progress=progress)
        elif action == "restore":
            await core.snapshots.restore(vm, label, actor=ACTOR, progress=progress)
        elif action == "delete":
            await core.snapshots.delete_snapshot(vm, label, actor=ACTOR, progress=progress)
        else:
            policy = policy_from_counts({"last": 1}, include_manual=True)
            preview = await core.pruning.preview(vm, policy)
            await core.pruning.apply(preview.to_delete, policy, actor=ACTOR, progress=progress)
        # a delayed kill may still be on its way: give it the time it asked for
        await asyncio.sleep(max(delay, 0) + 1)
    return 3


if __name__ == "__main__":
    db, uri, vm, action, label, stage, delay = sys.argv[1:8]
    sys.exit(asyncio.run(main(db, uri, vm, action, label, stage, float(delay))))
