"""A schedule over two real hosts: the tests' own libvirtd here and a second host's daemon over
``qemu+ssh://`` (remote_host.py). One run snapshots each host's guest, the hosts in parallel,
and reports per host; the second host's daemon killed mid-run leaves the first host's work
finished and the report naming the host that could not be reached."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import messages
from bot.mrkdwn import literal
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.hosts import HostConfig
from core.domain.schedule import Schedule, parse_when
from core.errors import HypervisorUnavailable
from core.services import reconcile
from core.services.fleet import FleetWatch
from tests.conftest import ALICE
from tests.system import daemon
from tests.system.conftest import Guest
from tests.system.remote_host import HostGuest, RemoteHost

pytestmark = pytest.mark.system

FIRE = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


class TwoRealHosts:
    def __init__(self, core: Core, here: LibvirtHypervisor, there: LibvirtHypervisor) -> None:
        self.core = core
        self.here = here
        self.there = there


@pytest.fixture
async def fleet(
    tmp_path: Path, catalogue: TortoiseCatalogue, second_host: RemoteHost
) -> AsyncIterator[TwoRealHosts]:
    """snapbot over both hosts, each on its own connection, as ``[[hosts]]`` configures."""
    here = LibvirtHypervisor(LibvirtConnection(daemon.URI, workers=2), name="here")
    # A host that went away must be told as such within the test's time.
    there = LibvirtHypervisor(
        LibvirtConnection(second_host.uri, workers=2, read_deadline=20), name="there"
    )
    hosts = [(HostConfig("here", daemon.URI), here), (HostConfig("there", second_host.uri), there)]
    settings = Settings(
        libvirt_uri=daemon.URI,
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url=f"sqlite://{tmp_path / 'catalogue.db'}",
        hosts=tuple(c for c, _ in hosts),
    )
    core = wire(
        settings, hosts, catalogue, SystemClock(), libvirt_uri="here, there", backoff=(0.5,)
    )
    assert isinstance(core.watch, FleetWatch)
    assert await core.watch.connect_once()
    try:
        yield TwoRealHosts(core, here, there)
    finally:
        await here.close()
        await there.close()
        second_host.ensure_up()


async def schedule_over_all(core: Core, name: str) -> Schedule:
    return await core.schedules.add(
        name, "all", parse_when(["daily", "02:00"], "UTC"), None, None, ALICE
    )


async def test_a_schedule_over_both_hosts_snapshots_each_hosts_guest_and_reports_per_host(
    fleet: TwoRealHosts,
    guest: Guest,
    second_host_guest: HostGuest,
    catalogue: TortoiseCatalogue,
) -> None:
    schedule = await schedule_over_all(fleet.core, "both")
    report = await fleet.core.runs.run(schedule, FIRE)
    assert report is not None
    assert report.status == "succeeded", messages.run_report(report)
    assert [(h, [o.vm for o in outs]) for h, outs in report.by_host()] == [
        ("here", [f"here/{guest.name}"]),
        ("there", [f"there/{second_host_guest.name}"]),
    ]
    label = schedule.snapshot_label(FIRE)
    # each host's libvirt has its own guest's snapshot, recorded with that host's UUID
    here_vm = await fleet.here.get_vm(guest.name)
    there_vm = await fleet.there.get_vm(second_host_guest.name)
    assert await fleet.here.list_snapshots(here_vm)
    assert await fleet.there.list_snapshots(there_vm)
    rows = {(s.vm_uuid, s.label, s.host_uuid) for s in await catalogue.snapshots()}
    assert (here_vm.uuid, label, await fleet.here.host_uuid()) in rows
    assert (there_vm.uuid, label, await fleet.there.host_uuid()) in rows
    text = messages.run_report(report)
    assert text.index("Host *here*:") < text.index(guest.name) < text.index("Host *there*:")
    assert text.index("Host *there*:") < text.index(second_host_guest.name)


async def test_the_second_hosts_daemon_killed_mid_run_leaves_the_first_hosts_work_done(
    fleet: TwoRealHosts,
    guest: Guest,
    second_host_guest: HostGuest,
    second_host: RemoteHost,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # snapbot waits for a host that lost the answer to a change (LOST_CONTACT_WAIT): shorter
    # here, the host staying away longer than that wait.
    monkeypatch.setattr(reconcile, "LOST_CONTACT_WAIT", 3.0)
    original = fleet.there.create_snapshot

    async def gone_then_create(*args: object, **kwargs: object) -> object:
        # The run is under way on both hosts: the second host goes away just before its
        # libvirt call (no sshd to reach it again, its daemon dead).
        await asyncio.to_thread(second_host.stop_sshd)
        await asyncio.to_thread(second_host.kill_daemon, signal.SIGKILL)
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fleet.there, "create_snapshot", gone_then_create)
    schedule = await schedule_over_all(fleet.core, "half")
    report = await fleet.core.runs.run(schedule, FIRE)
    assert report is not None
    outcomes = {o.host: o for o in report.outcomes}
    assert outcomes["here"].ok, messages.run_report(report)
    assert isinstance(outcomes["there"].error, HypervisorUnavailable)
    assert [h.name for h in report.unreachable] == ["there"]
    assert report.status == "failed"
    text = messages.run_report(report)
    assert f"here/{guest.name}: `{schedule.snapshot_label(FIRE)}`" in text
    # (the URI's "&" is escaped for Slack)
    assert "Host *there* (qemu+ssh://" in text
    assert ") is unreachable since " in text
    (down,) = report.unreachable
    assert down.last_error  # what the host last said (ssh refused, or the daemon's end)
    assert literal(down.last_error) in text
    here_vm = await fleet.here.get_vm(guest.name)
    labels = {s.libvirt_name for s in await fleet.here.list_snapshots(here_vm)}
    assert labels, "the first host's snapshot was taken"
