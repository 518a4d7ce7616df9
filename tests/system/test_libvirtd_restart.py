"""libvirtd restarts under a running snapbot: the lost connection is noticed, reads carry on over
a new one, the guest keeps running, and the next operation works."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from core.domain.vm import VmState
from tests.conftest import ALICE
from tests.system.conftest import Guest, RealCore

pytestmark = pytest.mark.system

START = Path(__file__).resolve().parent / "host" / "start-libvirtd.sh"


def restart_libvirtd() -> None:
    subprocess.run(["pkill", "-x", "libvirtd"], check=False)
    deadline = time.monotonic() + 20
    while subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise AssertionError("libvirtd did not stop")
        time.sleep(0.1)
    subprocess.run(["bash", str(START)], check=True)


async def test_a_libvirtd_restart_is_survived(real: RealCore, guest: Guest) -> None:
    await real.service.create_snapshot(guest.name, "before-restart", actor=ALICE)
    connection = real.hv._conn  # the one wrapper: its reconnect count is what we check
    before = connection.reconnects

    await asyncio.to_thread(restart_libvirtd)

    names = [vm.name for vm in await real.hv.list_vms()]
    assert guest.name in names, "a read after the restart works on a new connection"
    assert connection.reconnects > before
    vm = await real.hv.get_vm(guest.name)
    assert await real.hv.state(vm) is VmState.RUNNING, "QEMU outlives libvirtd"
    created = await real.service.create_snapshot(guest.name, "after-restart", actor=ALICE)
    assert created.snapshot.has_memory
    listing = await real.service.list_snapshots(guest.name)
    assert {s.label for s in listing[0].snapshots} == {"before-restart", "after-restart"}
