"""libvirtd restarts under a running snapbot: the lost connection is noticed, reads carry on over
a new one, the guest keeps running, and the next operation works. The daemon restarted is the
tests' own (found by its pid file), never the machine's system libvirtd."""

from __future__ import annotations

import asyncio

import pytest

from core.domain.vm import VmState
from tests.conftest import ALICE
from tests.system import daemon
from tests.system.conftest import Guest, RealCore

pytestmark = pytest.mark.system


async def test_a_libvirtd_restart_is_survived(real: RealCore, guest: Guest) -> None:
    await real.service.create_snapshot(guest.name, "before-restart", actor=ALICE)
    connection = real.hv._conn  # the one wrapper: its reconnect count is what we check
    before = connection.reconnects

    await asyncio.to_thread(daemon.restart_daemon)

    names = [vm.name for vm in await real.hv.list_vms()]
    assert guest.name in names, "a read after the restart works on a new connection"
    assert connection.reconnects > before
    vm = await real.hv.get_vm(guest.name)
    assert await real.hv.state(vm) is VmState.RUNNING, "QEMU outlives libvirtd"
    created = await real.service.create_snapshot(guest.name, "after-restart", actor=ALICE)
    assert created.snapshot.has_memory
    listing = await real.service.list_snapshots(guest.name)
    assert {s.label for s in listing[0].snapshots} == {"before-restart", "after-restart"}
