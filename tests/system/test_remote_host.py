"""A second hypervisor reached over a real remote transport (``qemu+ssh://``, the session
libvirtd of another user behind a private sshd: remote_host.py): snapbot lists its VMs,
snapshots and restores its guest, measures its storage through libvirt (no local file is
read: the URI is remote), and a host that goes away is told as unreachable and works again
when it comes back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import messages
from core.adapters.libvirt.connection import LibvirtConnection, is_local_uri
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.domain.operation import Stage
from core.domain.snapshot import CapturedState
from core.errors import HypervisorUnavailable
from core.services import reconcile
from core.services.operations import OperationRunner, process_owner
from core.services.reconcile import Reconciler
from core.services.snapshots import SnapshotService
from tests.conftest import ALICE, BOB
from tests.reliability.figures import record
from tests.system import daemon
from tests.system.conftest import RealCore
from tests.system.guest.guest import CounterLine, read_counter_lines, wait_for_counter
from tests.system.remote_host import POOL_NAME, HostGuest, RemoteHost

pytestmark = pytest.mark.system


@pytest.fixture
async def remote(catalogue: TortoiseCatalogue, second_host: RemoteHost) -> AsyncIterator[RealCore]:
    """snapbot's services over the second host, built as for any configured remote URI."""
    # Short deadlines: a host that went away must be told as such within the test's time.
    hv = LibvirtHypervisor(LibvirtConnection(second_host.uri, workers=2, read_deadline=20))
    clock = SystemClock()
    owner = process_owner()
    yield RealCore(
        hv,
        catalogue,
        SnapshotService(hv, catalogue, OperationRunner(catalogue, clock, owner), clock),
        Reconciler(hv, catalogue, clock, owner),
    )
    await hv.close()
    second_host.ensure_up()


async def counter_after(guest: HostGuest, offset: int, minimum: int = 0) -> CounterLine:
    return await asyncio.to_thread(
        wait_for_counter,
        guest.serial_log,
        after_offset=offset,
        timeout=60.0,
        predicate=lambda line: line.mem >= minimum,
    )


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def virsh_fields(text: str) -> dict[str, str]:
    return {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in text.splitlines())
        if value
    }


async def test_a_second_host_over_ssh_is_a_separate_hypervisor(
    remote: RealCore, second_host: RemoteHost, second_host_guest: HostGuest
) -> None:
    assert not is_local_uri(second_host.uri)
    names = [s.vm.name for s in await remote.service.list_vms()]
    assert second_host_guest.name in [n.name for n in await remote.hv.list_vms()]
    assert names == [second_host_guest.name], "only the second host's own VMs are listed"
    first = LibvirtHypervisor(LibvirtConnection(daemon.URI))
    try:
        assert await remote.hv.host_uuid() != await first.host_uuid()
        first_names = {vm.name for vm in await first.list_vms()}
    finally:
        await first.close()
    assert second_host_guest.name not in first_names
    record(
        "Second libvirt host",
        "another user's session libvirtd over qemu+ssh through a private sshd",
        f"set up in {second_host.setup_seconds:.1f} s (sshd, daemon, storage pool)",
    )


async def test_snapshot_and_restore_on_the_second_host(
    remote: RealCore, second_host_guest: HostGuest
) -> None:
    guest = second_host_guest
    created = await remote.service.create_snapshot(guest.name, "remote-before", actor=ALICE)
    at_snapshot = (await asyncio.to_thread(read_counter_lines, guest.serial_log))[-1]
    assert created.snapshot.has_memory
    assert created.snapshot.captured_state is CapturedState.RUNNING
    # Only qemu-img reading the image could tell the memory state's size: unknown there.
    assert created.snapshot.memory_bytes is None
    assert await remote.hv.memory_state_sizes(await remote.hv.get_vm(guest.name)) == {}
    moved_on = await counter_after(guest, log_size(guest.serial_log), minimum=at_snapshot.mem + 3)
    offset = log_size(guest.serial_log)
    result = await remote.service.restore(guest.name, "remote-before", actor=BOB)
    back = await counter_after(guest, offset)
    assert back.boot == at_snapshot.boot, "a restored memory state continues the same boot"
    assert back.mem <= at_snapshot.mem + 1 < moved_on.mem, "the memory counter went back"
    labels = {s.label for s in await remote.catalogue.snapshots(created.snapshot.vm_uuid)}
    assert "remote-before" in labels
    assert result.safety is not None
    assert result.safety.label in labels


async def test_free_space_and_allocation_come_from_the_hosts_libvirt(
    remote: RealCore, second_host: RemoteHost, second_host_guest: HostGuest
) -> None:
    vm = await remote.hv.get_vm(second_host_guest.name)
    facts = await remote.hv.vm_facts(vm)

    before = int(virsh_fields(second_host.virsh("pool-info", POOL_NAME, "--bytes"))["Available"])
    (place,) = await remote.hv.snapshot_places(facts)
    after = int(virsh_fields(second_host.virsh("pool-info", POOL_NAME, "--bytes"))["Available"])
    assert place.where == f"storage pool {POOL_NAME}"
    assert place.disks == ("vda",)
    assert place.available_bytes is not None
    # The filesystem is shared with everything else on the machine: it may move a little.
    assert (
        min(before, after) - 64 * 2**20 <= place.available_bytes <= max(before, after) + 64 * 2**20
    )

    blk_before = int(virsh_fields(second_host.virsh("domblkinfo", vm.name, "vda"))["Allocation"])
    allocation = await remote.hv.disk_allocation(vm)
    blk_after = int(virsh_fields(second_host.virsh("domblkinfo", vm.name, "vda"))["Allocation"])
    assert allocation is not None
    assert min(blk_before, blk_after) <= allocation <= max(blk_before, blk_after)

    # A pool that is not running, and then none at all: said plainly, with what would help.
    second_host.virsh("pool-destroy", POOL_NAME)
    try:
        (stopped,) = await remote.hv.snapshot_places(facts)
        assert stopped.available_bytes is None
        assert stopped.unknown_because == (
            f"storage pool {POOL_NAME} is not active (virsh pool-start {POOL_NAME})"
        )
        second_host.virsh("pool-undefine", POOL_NAME)
        (none,) = await remote.hv.snapshot_places(facts)
        assert none.available_bytes is None
        assert none.where == str(second_host.images)
        assert "no libvirt storage pool of this remote host holds it" in (
            none.unknown_because or ""
        )
    finally:
        second_host.define_pool()


async def test_a_host_that_goes_away_is_unreachable_and_works_again_when_back(
    remote: RealCore,
    second_host: RemoteHost,
    second_host_guest: HostGuest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guest = second_host_guest
    await remote.service.list_vms()  # connected
    # The host goes away: no sshd to reach it again, and its daemon dies (a fresh connection
    # would otherwise start a new one: the session daemon is spawned on demand).
    second_host.stop_sshd()
    second_host.kill_daemon(signal.SIGKILL)
    with pytest.raises(HypervisorUnavailable) as listing:
        await remote.service.list_vms()
    assert messages.error_text(listing.value).startswith("Lost contact with libvirt")

    # Back, and then gone again during a snapshot: the one in flight is told as unreachable.
    second_host.ensure_up()
    assert [s.vm.name for s in await remote.service.list_vms()] == [guest.name]

    # snapbot waits for a host that lost the answer to a change (LOST_CONTACT_WAIT): shorter
    # here, the host staying away longer than that wait.
    monkeypatch.setattr(reconcile, "LOST_CONTACT_WAIT", 3.0)

    async def progress(stage: Stage) -> None:
        # The operation has begun (VM locked, name recorded) and its libvirt call is next:
        # the host goes away in between, every time (a snapshot of this small guest takes
        # less time than any kill aimed into it could be timed by).
        if stage is Stage.SAVING_MEMORY_AND_DISK:
            await asyncio.to_thread(second_host.stop_sshd)
            await asyncio.to_thread(second_host.kill_daemon, signal.SIGKILL)

    with pytest.raises(HypervisorUnavailable) as snapshotting:
        await remote.service.create_snapshot(
            guest.name, "remote-gone", actor=ALICE, progress=progress
        )
    assert messages.error_text(snapshotting.value).startswith("Lost contact with libvirt")

    # Back: the guest's QEMU outlived its daemon, the interrupted operation is reconciled,
    # and snapshots work again.
    second_host.ensure_up()
    await remote.reconciler.sync_all()
    vms = {v.name: v for v in await remote.hv.list_vms()}
    assert vms[guest.name].state.is_active
    created = await remote.service.create_snapshot(guest.name, "remote-back", actor=ALICE)
    assert created.snapshot.has_memory
    labels = {s.label for s in await remote.catalogue.snapshots(created.snapshot.vm_uuid)}
    assert "remote-gone" not in labels, "a snapshot the host never made is not listed"
