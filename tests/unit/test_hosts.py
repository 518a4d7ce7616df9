"""Several libvirt hosts behind one snapbot: configuration, routing by host, names that several
hosts share, a host that is down while the other works, a host that comes back reconciled
first, the same hypervisor by two URIs, the per-host limit, per-host crash recovery."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.hosts import HostConfig, host_name_from_uri, split_vm_ref
from core.domain.operation import Actor, OperationKind, OperationStatus, Stage
from core.domain.snapshot import CatalogueStatus, Origin
from core.domain.vm import Vm, VmState
from core.errors import HostBusy, HypervisorUnavailable, InvalidInput, VmAmbiguous
from core.services.fleet import FleetWatch
from core.services.reconcile import record_of
from tests.fakes.hypervisor import FakeHypervisor

ALICE = Actor(user="U_ALICE", via="test", team="T1", channel="C1")
DEAD_OWNER = f"{socket.gethostname()}:999999:dead"
HV1_UUID = "aaaaaaaa-0000-4000-8000-000000000001"
HV2_UUID = "bbbbbbbb-0000-4000-8000-000000000002"
WEB_ON_1 = Vm("11111111-1111-1111-1111-111111111111", "web-01", VmState.RUNNING, 256 * 2**20)
DB_ON_1 = Vm("33333333-3333-3333-3333-333333333333", "db-01", VmState.SHUT_OFF, 512 * 2**20)
WEB_ON_2 = Vm("44444444-4444-4444-4444-444444444444", "web-01", VmState.RUNNING, 256 * 2**20)
APP_ON_2 = Vm("55555555-5555-5555-5555-555555555555", "app-01", VmState.SHUT_OFF, 256 * 2**20)


def two_hosts(
    hv1_limit: int = 2,
) -> tuple[FakeHypervisor, FakeHypervisor, list[tuple[HostConfig, FakeHypervisor]]]:
    hv1 = FakeHypervisor(
        WEB_ON_1, DB_ON_1, host_uuid=HV1_UUID, uri="qemu+ssh://root@hv1/system", name="hv1"
    )
    hv2 = FakeHypervisor(
        WEB_ON_2, APP_ON_2, host_uuid=HV2_UUID, uri="qemu+tls://hv2/system", name="hv2"
    )
    return (
        hv1,
        hv2,
        [
            (HostConfig("hv1", hv1.uri, hv1_limit), hv1),
            (HostConfig("hv2", hv2.uri), hv2),
        ],
    )


def settings_for(tmp_path: Path, hosts: list[tuple[HostConfig, FakeHypervisor]]) -> Settings:
    return Settings(
        libvirt_uri=hosts[0][0].uri,
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url=f"sqlite://{tmp_path / 'catalogue.db'}",
        hosts=tuple(config for config, _ in hosts),
    )


def fleet_core(
    tmp_path: Path,
    catalogue: TortoiseCatalogue,
    hosts: list[tuple[HostConfig, FakeHypervisor]],
    *,
    slot_wait: float = 600.0,
) -> Core:
    return wire(
        settings_for(tmp_path, hosts),
        list(hosts),
        catalogue,
        SystemClock(),
        libvirt_uri=", ".join(c.uri for c, _ in hosts),
        slot_wait=slot_wait,
        backoff=(0.05,),
    )


def fleet_watch(core: Core) -> FleetWatch:
    assert isinstance(core.watch, FleetWatch)
    return core.watch


async def interrupted_on(
    catalogue: TortoiseCatalogue, core: Core, vm: Vm, host_uuid: str | None
) -> str:
    """An operation a dead process left running on ``vm`` (recorded on ``host_uuid``) before
    its snapshot was started: the recovery finds nothing was changed."""
    details: dict[str, object] = {} if host_uuid is None else {"host_uuid": host_uuid}
    op = core._operations.new_operation(
        OperationKind.SNAPSHOT, ALICE, vm_uuid=vm.uuid, vm_name=vm.name, details=details
    )
    await catalogue.begin_operation(op, DEAD_OWNER)
    await catalogue.set_stage(op.id, Stage.CHECKING)
    return op.id


async def status_of(catalogue: TortoiseCatalogue, op_id: str) -> OperationStatus:
    return next(op for op in await catalogue.operations() if op.id == op_id).status


# -- configuration ----------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "snapbot.toml"
    path.write_text(text, encoding="utf-8")
    return {"SNAPBOT_CONFIG": str(path), "HOME": str(tmp_path)}


def test_hosts_tables_configure_every_host_with_its_limit(tmp_path: Path) -> None:
    settings = Settings.load(
        write_config(
            tmp_path,
            """
[[hosts]]
name = "hv1"
uri = "qemu+ssh://root@hv1/system"
max_operations = 3

[[hosts]]
name = "hv2"
uri = "qemu+tls://hv2/system"
""",
        )
    )
    assert settings.host_configs() == (
        HostConfig("hv1", "qemu+ssh://root@hv1/system", 3),
        HostConfig("hv2", "qemu+tls://hv2/system", 2),
    )
    # the first host's URI stands for "the" URI where one is shown, and counts as configured
    assert settings.libvirt_uri == "qemu+ssh://root@hv1/system"
    assert settings.libvirt_uri_explicit


def test_libvirt_uri_alone_is_one_host_named_after_its_machine(tmp_path: Path) -> None:
    remote = Settings.load({"LIBVIRT_URI": "qemu+ssh://root@hv7.example.com/system"})
    assert remote.hosts == ()
    assert remote.host_configs() == (HostConfig("hv7", "qemu+ssh://root@hv7.example.com/system"),)
    assert host_name_from_uri("qemu:///system") == "local"
    assert host_name_from_uri("qemu+ssh://root@10.0.0.5/system") == "10-0-0-5"


@pytest.mark.parametrize(
    ("tables", "complaint"),
    [
        ('[[hosts]]\nname = "HV_1"\nuri = "qemu:///system"\n', "a-z, 0-9 and '-'"),
        ('[[hosts]]\nuri = "qemu:///system"\n', "needs a name"),
        ('[[hosts]]\nname = "hv1"\n', "needs a libvirt uri"),
        (
            '[[hosts]]\nname = "hv1"\nuri = "qemu:///system"\n'
            '[[hosts]]\nname = "hv1"\nuri = "qemu+ssh://hv2/system"\n',
            "appears twice",
        ),
        (
            '[[hosts]]\nname = "hv1"\nuri = "qemu:///system"\n'
            '[[hosts]]\nname = "hv2"\nuri = "qemu:///system"\n',
            "same uri",
        ),
        ('[[hosts]]\nname = "hv1"\nuri = "qemu:///system"\nmax_operations = 0\n', "at least 1"),
        ('[[hosts]]\nname = "hv1"\nuri = "qemu:///system"\nlimit = 2\n', "unknown keys limit"),
    ],
)
def test_a_wrong_hosts_table_is_refused_saying_what_is_wrong(
    tmp_path: Path, tables: str, complaint: str
) -> None:
    with pytest.raises(InvalidInput, match=complaint):
        Settings.load(write_config(tmp_path, tables))


def test_libvirt_uri_that_no_hosts_table_lists_is_refused(tmp_path: Path) -> None:
    environ = write_config(tmp_path, '[[hosts]]\nname = "hv1"\nuri = "qemu:///system"\n')
    with pytest.raises(InvalidInput, match="unset LIBVIRT_URI"):
        Settings.load({**environ, "LIBVIRT_URI": "qemu+ssh://elsewhere/system"})


def test_a_vm_reference_names_its_host_before_the_slash() -> None:
    assert split_vm_ref("hv1/web-01") == split_vm_ref("hv1/web-01")
    ref = split_vm_ref("hv1/web-01")
    assert (ref.host, ref.name, str(ref)) == ("hv1", "web-01", "hv1/web-01")
    assert split_vm_ref("web-01").host is None


# -- routing ----------------------------------------------------------------------------------


async def test_listing_spans_hosts_and_each_vm_is_acted_on_where_it_lives(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, hv2, hosts = two_hosts()
    core = fleet_core(tmp_path, catalogue, hosts)
    assert await fleet_watch(core).connect_once()

    listed = {(s.vm.host, s.vm.name) for s in await core.snapshots.list_vms()}
    assert listed == {("hv1", "web-01"), ("hv1", "db-01"), ("hv2", "web-01"), ("hv2", "app-01")}

    # a name only one host has needs no host
    made = await core.snapshots.create_snapshot("app-01", "first", actor=ALICE)
    assert [m for m, _ in hv2.calls] == ["create_snapshot"]
    assert hv1.calls == []
    assert made.snapshot.host_uuid == HV2_UUID
    assert made.snapshot.hypervisor_uri == "qemu+tls://hv2/system"

    # hv1/web-01 is hv1's, whatever hv2 has under that name
    made = await core.snapshots.create_snapshot("hv1/web-01", "first", actor=ALICE)
    assert ("create_snapshot", WEB_ON_1.uuid) in hv1.calls
    assert all(uuid != WEB_ON_1.uuid for _, uuid in hv2.calls)
    assert made.snapshot.vm_uuid == WEB_ON_1.uuid
    assert made.snapshot.host_uuid == HV1_UUID
    ops = await catalogue.operations(WEB_ON_1.uuid)
    assert ops[0].details["host_uuid"] == HV1_UUID
    assert ops[0].details["host"] == "hv1"

    # each web-01 lists its own host's snapshots
    (on_2,) = await core.snapshots.list_snapshots("hv2/web-01")
    assert on_2.snapshots == ()
    assert on_2.vm is not None
    assert on_2.vm.host == "hv2"
    (on_1,) = await core.snapshots.list_snapshots("hv1/web-01")
    assert [s.label for s in on_1.snapshots] == ["first"]


async def test_a_name_two_hosts_share_is_refused_naming_the_candidates(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, hv2, hosts = two_hosts()
    core = fleet_core(tmp_path, catalogue, hosts)
    assert await fleet_watch(core).connect_once()
    with pytest.raises(VmAmbiguous) as raised:
        await core.snapshots.create_snapshot("web-01", "first", actor=ALICE)
    assert raised.value.candidates == ("hv1/web-01", "hv2/web-01")
    assert "hv1/web-01, hv2/web-01" in str(raised.value)
    assert hv1.calls == []
    assert hv2.calls == []
    # the refusal is audited like any other
    (refused,) = await catalogue.operations()
    assert refused.status is OperationStatus.REJECTED
    assert refused.vm_name == "web-01"
    with pytest.raises(InvalidInput, match="the hosts are hv1, hv2"):
        await core.snapshots.vm("hv9/web-01")


# -- a host down, a host back -------------------------------------------------------------------


async def test_a_host_that_is_down_is_named_while_the_other_keeps_working(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    _hv1, hv2, hosts = two_hosts()
    hv2.down = HypervisorUnavailable("Cannot recv data: Connection reset by peer")
    core = fleet_core(tmp_path, catalogue, hosts)
    assert not await fleet_watch(core).connect_once()

    (down,) = core.watch.unreachable()
    assert (down.name, down.uri) == ("hv2", "qemu+tls://hv2/system")
    assert "Connection reset by peer" in (down.last_error or "")
    assert {(s.vm.host, s.vm.name) for s in await core.snapshots.list_vms()} == {
        ("hv1", "web-01"),
        ("hv1", "db-01"),
    }
    # web-01 of hv1 is the only one that can be seen, but hv2 may have one too: say so
    with pytest.raises(HypervisorUnavailable, match="hv2"):
        await core.snapshots.vm("app-01")
    with pytest.raises(HypervisorUnavailable, match="host hv2: the hypervisor at"):
        await core.snapshots.create_snapshot("hv2/app-01", "first", actor=ALICE)
    made = await core.snapshots.create_snapshot("hv1/web-01", "first", actor=ALICE)
    assert made.snapshot.host_uuid == HV1_UUID
    readings = await core.status.readings()
    assert {(h.name, h.reachable) for h in readings.hosts} == {("hv1", True), ("hv2", False)}


async def test_a_host_that_stops_answering_is_left_out_until_it_is_back(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    _hv1, hv2, hosts = two_hosts()
    core = fleet_core(tmp_path, catalogue, hosts)
    assert await fleet_watch(core).connect_once()
    hv2.down = HypervisorUnavailable("Cannot recv data: Connection reset by peer")
    names = {(s.vm.host, s.vm.name) for s in await core.snapshots.list_vms()}
    assert names == {("hv1", "web-01"), ("hv1", "db-01")}
    assert [h.name for h in core.watch.unreachable()] == ["hv2"]
    # until its watch reached it again and reconciled, it is refused even once it answers
    hv2.down = None
    with pytest.raises(HypervisorUnavailable, match="host hv2"):
        await core.snapshots.vm("hv2/app-01")
    runner = asyncio.create_task(fleet_watch(core).run())
    try:
        for _ in range(100):
            if not core.watch.unreachable():
                break
            await asyncio.sleep(0.02)
        assert (await core.snapshots.vm("hv2/app-01")).uuid == APP_ON_2.uuid
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_a_host_that_comes_back_is_reconciled_before_it_is_used(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    _hv1, hv2, hosts = two_hosts()
    hv2.down = HypervisorUnavailable("Connection refused")
    core = fleet_core(tmp_path, catalogue, hosts)
    left_on_2 = await interrupted_on(catalogue, core, APP_ON_2, HV2_UUID)
    assert not await fleet_watch(core).connect_once()
    # hv1's recovery leaves hv2's operation alone: only hv2 can tell what happened to it
    assert await status_of(catalogue, left_on_2) is OperationStatus.RUNNING

    told: list[str] = []

    async def listener(ops: object) -> None:
        told.extend(op.id for op in ops)  # type: ignore[attr-defined]

    await core.watch.on_reconciled(listener)
    hv2.down = None
    with pytest.raises(HypervisorUnavailable):
        await core.snapshots.create_snapshot("app-01", "after", actor=ALICE)
    assert await fleet_watch(core).connect_once()
    assert await status_of(catalogue, left_on_2) is OperationStatus.RECONCILED
    assert told == [left_on_2]
    made = await core.snapshots.create_snapshot("app-01", "after", actor=ALICE)
    assert made.snapshot.host_uuid == HV2_UUID


# -- the same hypervisor by two URIs ------------------------------------------------------------


async def test_the_same_hypervisor_by_two_uris_is_listed_once_as_an_alias(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, _hv2, hosts = two_hosts()
    # hv1 again, by its other address: same host UUID, same VMs
    again = FakeHypervisor(host_uuid=HV1_UUID, uri="qemu+ssh://root@10.0.0.1/system", name="x")
    again.vms = hv1.vms
    hosts.append((HostConfig("hv1-ip", again.uri), again))
    core = fleet_core(tmp_path, catalogue, hosts)
    assert await fleet_watch(core).connect_once()  # every host that is not an alias

    listed = [(s.vm.host, s.vm.name) for s in await core.snapshots.list_vms()]
    assert sorted(listed) == [
        ("hv1", "db-01"),
        ("hv1", "web-01"),
        ("hv2", "app-01"),
        ("hv2", "web-01"),
    ]
    alias = next(h for h in core.watch.health() if h.name == "hv1-ip")
    assert alias.alias_of == "hv1"
    assert "same hypervisor as host hv1" in (alias.last_error or "")
    assert core.watch.unreachable() == []  # an alias is not a host that is down
    # its name still reaches the VM, as hv1's
    vm = await core.snapshots.vm("hv1-ip/db-01")
    assert (vm.host, vm.uuid) == ("hv1", DB_ON_1.uuid)
    await core.snapshots.create_snapshot("hv1-ip/db-01", "one", actor=ALICE)
    assert again.calls == []
    assert ("create_snapshot", DB_ON_1.uuid) in hv1.calls
    readings = await core.status.readings()
    assert [h.alias_of for h in readings.hosts if h.name == "hv1-ip"] == ["hv1"]


# -- the per-host limit -------------------------------------------------------------------------


async def test_a_host_runs_at_most_its_limit_of_operations_and_others_are_not_held_up(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, hv2, hosts = two_hosts(hv1_limit=1)
    core = fleet_core(tmp_path, catalogue, hosts)
    assert await fleet_watch(core).connect_once()
    inside = {"hv1": 0, "hv2": 0}
    most = {"hv1": 0, "hv2": 0}

    def counting(name: str) -> object:
        async def hook() -> None:
            inside[name] += 1
            most[name] = max(most[name], inside[name])
            await asyncio.sleep(0.2)
            inside[name] -= 1

        return hook

    hv1.after_create = counting("hv1")  # type: ignore[assignment]
    hv2.after_create = counting("hv2")  # type: ignore[assignment]
    await asyncio.gather(
        core.snapshots.create_snapshot("hv1/web-01", "a", actor=ALICE),
        core.snapshots.create_snapshot("db-01", "a", actor=ALICE),
        core.snapshots.create_snapshot("hv2/web-01", "a", actor=ALICE),
        core.snapshots.create_snapshot("app-01", "a", actor=ALICE),
    )
    assert most == {"hv1": 1, "hv2": 2}
    assert len([c for c in hv1.calls if c[0] == "create_snapshot"]) == 2


async def test_an_operation_that_waits_too_long_for_its_host_is_refused_as_busy(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, _hv2, hosts = two_hosts(hv1_limit=1)
    core = fleet_core(tmp_path, catalogue, hosts, slot_wait=0.1)
    assert await fleet_watch(core).connect_once()
    hv1.delay = 0.5
    first, second, other = await asyncio.gather(
        core.snapshots.create_snapshot("hv1/web-01", "a", actor=ALICE),
        core.snapshots.create_snapshot("db-01", "a", actor=ALICE),
        core.snapshots.create_snapshot("app-01", "a", actor=ALICE),
        return_exceptions=True,
    )
    assert not isinstance(first, BaseException)
    assert not isinstance(other, BaseException)
    assert isinstance(second, HostBusy)
    assert (second.host, second.limit) == ("hv1", 1)
    assert "host hv1 is busy" in str(second)
    # refused before it took the VM's lock, and audited
    (refused,) = list(await catalogue.operations(DB_ON_1.uuid))
    assert refused.status is OperationStatus.REJECTED
    assert [h.operations for h in core.watch.health()] == [0, 0]


# -- crash recovery per host ---------------------------------------------------------------------


async def test_each_host_recovers_only_its_own_interrupted_operations_and_records(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    _hv1, hv2, hosts = two_hosts()
    hv2.down = HypervisorUnavailable("Connection refused")
    core = fleet_core(tmp_path, catalogue, hosts)
    on_1 = await interrupted_on(catalogue, core, DB_ON_1, HV1_UUID)
    on_2 = await interrupted_on(catalogue, core, WEB_ON_2, HV2_UUID)
    # an older operation that recorded no host: its VM is on hv1
    unrecorded = await interrupted_on(catalogue, core, WEB_ON_1, None)
    # a snapshot record of hv2's VM: hv1's listing does not have that VM, yet it is not gone
    hv2.down = None
    await hv2.create_snapshot(WEB_ON_2, "snap-on-2", "")
    hv2.calls.clear()
    hv2.down = HypervisorUnavailable("Connection refused")

    (hs,) = hv2.vms[WEB_ON_2.uuid].snapshots.values()
    await catalogue.add_snapshot(
        record_of(
            WEB_ON_2,
            hs,
            label="on-two",
            created_by="U_ALICE",
            origin=Origin.MANUAL,
            host_uuid=HV2_UUID,
            hypervisor_uri=hv2.uri,
        )
    )

    assert not await fleet_watch(core).connect_once()
    assert await status_of(catalogue, on_1) is OperationStatus.RECONCILED
    assert await status_of(catalogue, unrecorded) is OperationStatus.RECONCILED
    assert await status_of(catalogue, on_2) is OperationStatus.RUNNING
    (row,) = await catalogue.snapshots(WEB_ON_2.uuid)
    assert row.status is CatalogueStatus.PRESENT

    hv2.down = None
    assert await fleet_watch(core).connect_once()
    assert await status_of(catalogue, on_2) is OperationStatus.RECONCILED
    # hv2's own sync then judges it: gone from hv2, it is missing
    del hv2.vms[WEB_ON_2.uuid].snapshots["snap-on-2"]
    await core.snapshots.list_snapshots("hv2/web-01")
    (row,) = await catalogue.snapshots(WEB_ON_2.uuid)
    assert row.status is CatalogueStatus.MISSING


# -- snapbot doctor ----------------------------------------------------------------------------


async def test_doctor_checks_libvirt_on_every_host_and_names_the_one_that_fails(
    tmp_path: Path,
) -> None:
    from core.bootstrap_doctor import run_doctor
    from core.services.doctor import Check, Status
    from tests.unit.test_doctor import UNREACHABLE_URI, good_node, migrated, settings

    db = await migrated(tmp_path / "catalogue.sqlite3")
    good = good_node(tmp_path)
    hosts = (HostConfig("hv1", good), HostConfig("hv2", UNREACHABLE_URI))
    configured = replace(settings(good, db), hosts=hosts)
    findings = await run_doctor(configured)
    libvirt = [(f.facts["host"], f.status) for f in findings if f.check is Check.LIBVIRT]
    assert libvirt == [("hv1", Status.OK), ("hv2", Status.FAIL)]
    gone = next(f for f in findings if f.check is Check.LIBVIRT and f.status is Status.FAIL)
    assert gone.facts["uri"] == UNREACHABLE_URI
    # hv1 answers: its VMs' disks are still checked
    assert next(f for f in findings if f.check is Check.DISKS).status is Status.OK


async def test_a_name_a_host_that_is_down_had_too_is_still_ambiguous(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    _hv1, hv2, hosts = two_hosts()
    core = fleet_core(tmp_path, catalogue, hosts)
    assert await fleet_watch(core).connect_once()
    await core.snapshots.list_vms()
    hv2.down = HypervisorUnavailable("Connection refused")
    await core.snapshots.list_vms()  # hv2 found unreachable
    with pytest.raises(VmAmbiguous) as raised:
        await core.snapshots.vm("web-01")
    assert raised.value.candidates == ("hv1/web-01", "hv2/web-01")
    # a name only the host that answers has still works, and so does the host's own name
    assert (await core.snapshots.vm("db-01")).host == "hv1"
    assert (await core.snapshots.vm("hv1/web-01")).uuid == WEB_ON_1.uuid
