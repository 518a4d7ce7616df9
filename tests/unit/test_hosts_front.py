"""Several hosts as operators see them: listings and the Home header grouped by host with a host
that is down named, hv1/web-01 wherever a VM is named, a name two hosts share, grants limited to
hosts, schedules that span hosts (in parallel, reported per host), the digest."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import grammar, messages
from bot.dispatch import ConfirmDelete, ConfirmRestore, Dispatcher, Reply
from bot.grammar import UsageError
from bot.mrkdwn import plain
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.access import Action, parse_grants
from core.domain.hosts import HostHealth, suggestable_names
from core.domain.operation import Actor, OperationStatus
from core.domain.schedule import ScheduleTask, parse_when, validate_vm_selector
from core.domain.snapshot import HoldKind
from core.domain.vm import Disk, DiskFormat
from core.errors import Forbidden, HypervisorUnavailable, InvalidInput, VmAmbiguous, VmNotFound
from core.services import reconcile
from core.services.doctor import (
    Check,
    Doctor,
    DoctorPorts,
    Finding,
    Problem,
    Rights,
    Schema,
    SchemaState,
    SlackAuth,
    Status,
    StoreFacts,
)
from core.services.reports import RunReport
from tests.fakes.fleet import APP_ON_2, DB_ON_1, WEB_ON_1, WEB_ON_2, TwoHosts

ALICE = Actor(user="U_ALICE", via="test", channel="C1")
HV1_OPERATOR = Actor(user="U_HV1", via="slack", channel="C1")
FIRE = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
DOWN = HypervisorUnavailable("Cannot recv data: Connection reset by peer")


class NoGroups:
    async def members(self, usergroup: str) -> Collection[str]:
        return ()

    async def home(self) -> tuple[str | None, str | None]:
        return None, None


def flat(text: str) -> str:
    """The text as read, without its bold and code marks."""
    return plain(text).replace("*", "").replace("`", "")


async def reply(dispatcher: Dispatcher, text: str, actor: Actor = ALICE) -> str:
    outcome = await dispatcher.handle(grammar.parse_line("/" + text), actor)
    assert isinstance(outcome, Reply)
    return flat(outcome.text)


# -- listings -----------------------------------------------------------------------------------


async def test_listings_group_vms_by_host_and_name_a_host_that_is_down(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    await hosts.core.snapshots.create_snapshot("app-01", "before", actor=ALICE)
    dispatcher = Dispatcher(hosts.core, None)

    both = await reply(dispatcher, "snapshot vms")
    hv1_at, hv2_at = both.index("Host hv1"), both.index("Host hv2")
    assert hv1_at < both.index("db-01") < hv2_at < both.index("app-01")
    assert both.count("web-01") == 2

    hosts.hv2.down = DOWN
    vms = await reply(dispatcher, "snapshot vms")
    assert "Host hv1 (qemu+ssh://root@hv1/system): 2 VM(s)" in vms
    assert "db-01" in vms
    assert "app-01" not in vms
    (down,) = hosts.core.watch.unreachable()
    assert down.down_since is not None
    assert (
        f"Host hv2 (qemu+tls://hv2/system) is unreachable since {messages.when(down.down_since)}: "
        "Cannot recv data: Connection reset by peer" in vms
    )

    # app-01's records are its host's, not a VM that no longer exists
    listing = await reply(dispatcher, "snapshot list")
    after_hv2 = listing[listing.index("Host hv2") :]
    assert "app-01 (its host does not answer: state unknown)" in after_hv2
    assert "before" in after_hv2
    assert "no longer exists" not in listing
    assert listing.index("Host hv1") < listing.index("db-01") < listing.index("Host hv2")


def test_one_host_lists_as_before() -> None:
    one = [HostHealth("local", "qemu:///system", True, None, 1)]
    assert messages.vms_table([], one) == messages.vms_table([]) == "No VMs on this host."
    assert messages.listed_hosts(one) == []
    # an alias is not a second host
    alias = HostHealth("hv1b", "qemu+ssh://hv1/system", False, "same", 1, alias_of="local")
    assert messages.listed_hosts([*one, alias]) == []


async def test_the_home_header_counts_vms_per_host_and_names_the_one_down(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    hosts.hv2.down = DOWN
    groups = await Dispatcher(hosts.core, None).overview()
    counts = {"hv1": sum(1 for g in groups if g.vm is not None and g.vm.host == "hv1")}
    text = flat(messages.hosts_summary(hosts.core.watch.health(), counts))
    assert "• hv1: 2 VM(s)" in text
    assert "Host hv2 (qemu+tls://hv2/system) is unreachable since" in text
    home = flat(messages.home_vm(next(g for g in groups if g.vm_name == "db-01"), with_host=True))
    assert home.startswith("hv1/db-01 (shut off)")


# -- names --------------------------------------------------------------------------------------


async def test_a_shared_name_is_answered_with_the_names_to_type(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    dispatcher = Dispatcher(hosts.core, None)
    with pytest.raises(VmAmbiguous) as raised:
        await dispatcher.handle(grammar.parse_line("/snapshot web-01 before"), ALICE)
    text = flat(messages.error_text(raised.value))
    assert "Several hosts have a VM named web-01: hv1/web-01, hv2/web-01" in text
    assert "such as hv1/web-01" in text
    assert hosts.hv1.calls == hosts.hv2.calls == []

    # typed with its host, it works wherever a VM name goes
    taken = await reply(dispatcher, "snapshot hv2/web-01 before")
    assert "before" in taken
    assert hosts.hv2.calls == [("create_snapshot", WEB_ON_2.uuid)]
    listed = await reply(dispatcher, "snapshot list hv2/web-01")
    assert "before" in listed
    assert "before" not in await reply(dispatcher, "snapshot list hv1/web-01")


async def test_an_unknown_name_suggests_names_with_their_host_where_shared(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    with pytest.raises(VmNotFound) as raised:
        await hosts.core.snapshots.vm("web-1")
    assert raised.value.suggestions[:2] == ("hv1/web-01", "hv2/web-01")
    with pytest.raises(VmNotFound) as raised:
        await hosts.core.snapshots.vm("ap-01")
    assert raised.value.suggestions[0] == "app-01"  # one host has it: no host needed
    with pytest.raises(VmNotFound) as raised:
        await hosts.core.snapshots.vm("hv2/ap-01")
    assert raised.value.suggestions[0] == "hv2/app-01"
    assert suggestable_names("x", [(None, "a"), (None, "b")]) == ["a", "b"]


def test_the_grammar_takes_host_slash_vm_as_a_vm_and_refuses_it_as_a_new_name() -> None:
    assert grammar.parse_line("/snapshot hv1/web-01 before").vm == "hv1/web-01"  # type: ignore[union-attr]
    assert grammar.parse_line("/restore hv2/web-01 before").vm == "hv2/web-01"  # type: ignore[union-attr]
    assert grammar.parse_line("/prune hv1/db-01 --keep-last 2").vm == "hv1/db-01"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="contains '/'"):
        grammar.parse_line("/restore hv1/web-01 before --as hv2/copy")
    assert validate_vm_selector("hv1/web-*") == "hv1/web-*"
    assert validate_vm_selector("hv*/db-01") == "hv*/db-01"
    for bad in ("hv1/", "/web-01", "hv1/web/01", "HV 1/web", "Hv1/web"):
        with pytest.raises(InvalidInput):
            validate_vm_selector(bad)


# -- grants limited to hosts --------------------------------------------------------------------

HV1_GRANTS = [
    {"role": "operator", "users": [HV1_OPERATOR.user], "hosts": ["hv1"]},
    {"role": "viewer", "users": ["U_WEB_ON_2"], "hosts": ["hv2"], "vms": ["web-*"]},
]


async def test_a_grant_limited_to_a_host_covers_only_that_hosts_vms(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue, access=parse_grants(HV1_GRANTS))
    assert await hosts.connect()
    access = hosts.core.access_for(NoGroups())
    dispatcher = Dispatcher(hosts.core, access)

    await access.require(HV1_OPERATOR, Action.SNAPSHOT, "hv1/web-01")
    await access.require(HV1_OPERATOR, Action.SNAPSHOT, "db-01")  # found on hv1
    for refused in ("hv2/web-01", "app-01", "hv2/app-01", None):
        with pytest.raises(Forbidden):
            await access.require(HV1_OPERATOR, Action.SNAPSHOT, refused)
    # a name both hosts have: told the one they may act on, nothing of the other
    with pytest.raises(VmAmbiguous) as raised:
        await access.require(HV1_OPERATOR, Action.SNAPSHOT, "web-01")
    assert raised.value.candidates == ("hv1/web-01",)
    # host and VM pattern together
    web2 = Actor(user="U_WEB_ON_2", via="slack", channel="C1")
    assert await access.allows(web2, Action.VIEW, "hv2/web-01")
    assert not await access.allows(web2, Action.VIEW, "hv1/web-01")
    assert not await access.allows(web2, Action.VIEW, "app-01")
    with pytest.raises(VmAmbiguous) as raised:
        await access.require(web2, Action.VIEW, "web-01")
    assert raised.value.candidates == ("hv2/web-01",)

    # listings show only the host's VMs
    vms = await reply(dispatcher, "snapshot vms", HV1_OPERATOR)
    assert "db-01" in vms
    assert "app-01" not in vms
    assert vms.count("web-01") == 1
    with pytest.raises(Forbidden):
        await dispatcher.handle(grammar.parse_line("/snapshot hv2/web-01 x"), HV1_OPERATOR)
    assert hosts.hv2.calls == []
    refusals = [o for o in await catalogue.operations() if o.status is OperationStatus.REJECTED]
    assert refusals
    assert all(o.vm_name != "hv1/web-01" for o in refusals)
    await dispatcher.handle(grammar.parse_line("/snapshot hv1/web-01 x"), HV1_OPERATOR)
    assert hosts.hv1.calls == [("create_snapshot", WEB_ON_1.uuid)]


async def test_a_host_limited_grant_covers_nothing_on_a_host_that_cannot_be_told(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue, access=parse_grants(HV1_GRANTS))
    assert await hosts.connect()
    hosts.hv1.down = DOWN
    access = hosts.core.access_for(NoGroups())
    # db-01 cannot be found while hv1 is down: not granted (deny by default)
    assert not await access.allows(HV1_OPERATOR, Action.VIEW, "db-01")
    # typed with its host, the grant applies (the request then says hv1 is unreachable)
    assert await access.allows(HV1_OPERATOR, Action.VIEW, "hv1/db-01")


def test_grants_name_hosts_in_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "snapbot.toml"
    base = """
[[hosts]]
name = "hv1"
uri = "qemu+ssh://root@hv1/system"
[[hosts]]
name = "hv2"
uri = "qemu+tls://hv2/system"
"""
    config.write_text(
        base + '[[access.grants]]\nrole = "operator"\nusers = ["U1"]\nhosts = ["hv1"]\n'
    )
    settings = Settings.load({"SNAPBOT_CONFIG": str(config), "HOME": str(tmp_path)})
    (grant,) = settings.access.grants
    assert grant.hosts == ("hv1",)
    assert settings.access.allows(
        "U1", (), Action.SNAPSHOT, vm="web-01", channel=None, hosts={"hv1"}
    )
    assert not settings.access.allows(
        "U1", (), Action.SNAPSHOT, vm="web-01", channel=None, hosts={"hv2"}
    )
    config.write_text(
        base + '[[access.grants]]\nrole = "operator"\nusers = ["U1"]\nhosts = ["hv3"]\n'
    )
    with pytest.raises(InvalidInput, match="access grant #1: hosts names 'hv3', which is no"):
        Settings.load({"SNAPBOT_CONFIG": str(config), "HOME": str(tmp_path)})


def test_a_vm_pattern_with_a_host_matches_on_that_host_only() -> None:
    policy = parse_grants([{"role": "viewer", "users": ["U1"], "vms": ["hv1/web-*"]}])
    assert policy.allows("U1", (), Action.VIEW, vm="hv1/web-01", channel=None)
    assert policy.allows("U1", (), Action.VIEW, vm="web-01", channel=None, hosts={"hv1"})
    assert not policy.allows("U1", (), Action.VIEW, vm="hv2/web-01", channel=None)
    assert not policy.allows("U1", (), Action.VIEW, vm="web-01", channel=None)


# -- schedules over several hosts ---------------------------------------------------------------


async def add_schedule(hosts: TwoHosts, vms: str = "all") -> object:
    return await hosts.core.schedules.add(
        "nightly", vms, parse_when(["daily", "02:00"], "UTC"), None, "C_OPS", ALICE
    )


async def test_a_schedule_over_all_runs_the_hosts_in_parallel_and_reports_per_host(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    in_flight: dict[str, int] = {"hv1": 0, "hv2": 0}
    overlaps: list[tuple[int, int]] = []
    per_host_peak = {"hv1": 0, "hv2": 0}

    def counting(name: str) -> None:
        hv = hosts.hv1 if name == "hv1" else hosts.hv2
        original = hv.create_snapshot

        async def create(*args: object, **kwargs: object) -> object:
            in_flight[name] += 1
            per_host_peak[name] = max(per_host_peak[name], in_flight[name])
            overlaps.append((in_flight["hv1"], in_flight["hv2"]))
            try:
                await asyncio.sleep(0.05)
                return await original(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                in_flight[name] -= 1

        hv.create_snapshot = create  # type: ignore[method-assign]

    counting("hv1")
    counting("hv2")
    hosts.hv2.free_bytes = 5 * 2**30
    schedule = await add_schedule(hosts)
    report = await hosts.core.runs.run(schedule, FIRE)  # type: ignore[arg-type]
    assert report is not None
    # both hosts worked at once, each on as many VMs as its limit (2) allows
    assert any(a and b for a, b in overlaps)
    assert per_host_peak == {"hv1": 2, "hv2": 2}
    assert report.status == "succeeded"
    assert [(h, [o.vm for o in outs]) for h, outs in report.by_host()] == [
        ("hv1", ["hv1/db-01", "hv1/web-01"]),
        ("hv2", ["hv2/app-01", "hv2/web-01"]),
    ]
    text = flat(messages.run_report(report))
    assert text.index("Host hv1:") < text.index("hv1/db-01") < text.index("Host hv2:")
    assert text.index("Host hv2:") < text.index("hv2/web-01: nightly-20261126-0200")
    # each host's storage is its own
    hv1_storage = text.index("Host hv1: Storage: disk images 22.0 MiB; 100.0 GiB free")
    assert hv1_storage < text.index("Host hv2: Storage: disk images 22.0 MiB; 5.0 GiB free")
    assert {uuid for _, uuid in hosts.hv1.calls} == {WEB_ON_1.uuid, DB_ON_1.uuid}
    assert {uuid for _, uuid in hosts.hv2.calls} == {WEB_ON_2.uuid, APP_ON_2.uuid}


async def test_a_host_down_is_named_in_the_report_while_the_other_is_snapshotted(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    hosts.hv2.down = DOWN
    assert not await hosts.connect()
    schedule = await add_schedule(hosts)
    report = await hosts.core.runs.run(schedule, FIRE)  # type: ignore[arg-type]
    assert report is not None
    assert [o.vm for o in report.outcomes] == ["hv1/db-01", "hv1/web-01"]
    assert all(o.ok for o in report.outcomes)
    assert [h.name for h in report.unreachable] == ["hv2"]
    assert report.status == "failed"
    assert report.summary()["unreachable_hosts"] == {
        "hv2": "Cannot recv data: Connection reset by peer"
    }
    text = flat(messages.run_report(report))
    assert text.startswith("❌")
    assert "Host hv2 (qemu+tls://hv2/system) is unreachable since" in text
    assert "This run could not reach its VMs there." in text
    # a schedule limited to hv1 is not failed by hv2
    only_hv1 = await hosts.core.schedules.add(
        "hv1-only", "hv1/*", parse_when(["daily", "03:00"], "UTC"), None, "C_OPS", ALICE
    )
    report = await hosts.core.runs.run(only_hv1, FIRE)
    assert report is not None
    assert report.status == "succeeded"
    assert report.unreachable == []
    assert [o.vm for o in report.outcomes] == ["hv1/db-01", "hv1/web-01"]


async def test_a_host_lost_mid_run_fails_its_vms_and_the_other_host_finishes(
    tmp_path: Path, catalogue: TortoiseCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hv2's second VM is snapshotted beside its first (the host's limit is 2), so its change
    # is in flight when the host goes: snapbot waits for the host to answer again
    # (LOST_CONTACT_WAIT, a minute) before it reports the outcome unknown. Shorter here.
    monkeypatch.setattr(reconcile, "LOST_CONTACT_WAIT", 1.0)
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    hosts.hv1.delay = 0.05

    async def lose_hv2() -> None:
        hosts.hv2.down = DOWN  # the daemon stopped after its first snapshot

    hosts.hv2.after_create = lose_hv2
    schedule = await add_schedule(hosts)
    report = await hosts.core.runs.run(schedule, FIRE)  # type: ignore[arg-type]
    assert report is not None
    outcomes = {o.vm: o for o in report.outcomes}
    assert outcomes["hv1/db-01"].ok
    assert outcomes["hv1/web-01"].ok
    assert [h.name for h in report.unreachable] == ["hv2"]
    hv2_failed = [o for o in report.outcomes if o.host == "hv2" and not o.ok]
    assert hv2_failed
    assert report.status == "failed"
    assert "Host hv2 (qemu+tls://hv2/system) is unreachable" in flat(messages.run_report(report))


async def test_one_host_reports_as_before(tmp_path: Path, catalogue: TortoiseCatalogue) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    report = RunReport(await add_schedule(hosts), FIRE)  # type: ignore[arg-type]
    assert report.by_host() == [(None, [])]
    assert "Host" not in flat(messages.run_report(report))
    assert "unreachable_hosts" not in report.summary()


async def test_the_digest_names_vms_with_their_host_and_a_host_that_is_down(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    hosts.hv2.down = DOWN
    assert not await hosts.connect()
    digest = await hosts.core.runs.digest("C_OPS", FIRE)
    assert [line.vm for line in digest.lines] == ["hv1/db-01", "hv1/web-01"]
    text = flat(messages.digest_text(digest))
    assert "Host hv2 (qemu+tls://hv2/system) is unreachable since" in text
    assert ScheduleTask.SNAPSHOT  # the digest is built for every task kind alike


# -- snapbot doctor over several hosts ----------------------------------------------------------


class HostProbes:
    """The doctor's probes: libvirt rights per URI (a URI in ``down`` does not answer)."""

    def __init__(self, down: set[str]) -> None:
        self.down = down

    async def rights(self, uri: str) -> Rights:
        if uri in self.down:
            raise HypervisorUnavailable("Connection refused")
        return Rights.READ_WRITE

    async def facts(self, directory: Path) -> StoreFacts:
        return StoreFacts(True, 500 * 2**30, 1, ())

    async def device_of(self, path: str) -> int | None:
        return 2

    async def schema(self, database_url: str) -> Schema:
        return Schema(SchemaState.UP_TO_DATE)

    async def auth_test(self, token: str) -> SlackAuth:
        return SlackAuth(error=None, team="T", scopes=None)

    async def open_socket(self, app_token: str) -> str | None:
        return None


async def run_doctor_over(hosts: TwoHosts, down: set[str]) -> list[Finding]:
    probes = HostProbes(down)
    return await Doctor(
        hosts.core.settings,
        hosts.hv1,
        DoctorPorts(
            libvirt=probes, schema=probes, slack=probes, clock=SystemClock(), backup=probes
        ),
        required_scopes=frozenset(),
        public_url=None,
        hosts={"hv1": hosts.hv1, "hv2": hosts.hv2},
    ).run()


async def test_doctor_checks_disks_and_space_on_each_host(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    raw = Disk("vda", "/srv/images/app.img", DiskFormat.RAW, "raw", False)
    hosts.hv2.vms[APP_ON_2.uuid] = replace(hosts.hv2.vms[APP_ON_2.uuid], disks=(raw,))
    hosts.hv2.free_bytes = 2**30  # 1 GiB: too little for a snapshot with memory
    findings = await run_doctor_over(hosts, set())
    per_host = {
        (f.check, f.facts.get("host")): f
        for f in findings
        if f.check in (Check.LIBVIRT, Check.DISKS, Check.SPACE)
    }
    assert per_host[Check.DISKS, "hv1"].status is Status.OK
    assert per_host[Check.SPACE, "hv1"].status is Status.OK
    assert per_host[Check.DISKS, "hv2"].status is Status.FAIL
    assert "app-01:vda (raw)" in per_host[Check.DISKS, "hv2"].facts["disks"]
    assert per_host[Check.SPACE, "hv2"].problem is Problem.SPACE_LOW
    report = messages.doctor_report(findings)
    assert "FAIL  disk formats on hv2: writable disks not in qcow2" in report
    assert "OK    disk formats on hv1:" in report
    assert "WARN  free space on hv2: less than 2.0 GiB free" in report


async def test_doctor_names_the_host_it_cannot_reach_and_checks_the_other(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    findings = await run_doctor_over(hosts, {hosts.hv2.uri})
    report = messages.doctor_report(findings)
    assert "FAIL  libvirt on hv2: cannot reach libvirt at qemu+tls://hv2/system" in report
    assert "OK    libvirt on hv1:" in report
    assert "OK    disk formats on hv1:" in report
    assert "WARN  disk formats on hv2: not checked: libvirt on host hv2 did not answer" in report
    assert "WARN  free space on hv2: not checked" in report


# -- confirmations name the VM with its host ----------------------------------------------------


async def test_a_restore_and_a_delete_confirmed_later_act_on_the_vm_of_the_host_named(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    await hosts.core.snapshots.create_snapshot("hv2/web-01", "good", actor=ALICE)
    await hosts.core.snapshots.create_snapshot("hv2/web-01", "old", actor=ALICE)
    dispatcher = Dispatcher(hosts.core, None)

    restore = await dispatcher.handle(grammar.parse_line("/restore hv2/web-01 good"), ALICE)
    assert isinstance(restore, ConfirmRestore)
    # typed to confirm: the name that says which web-01 will be changed
    assert restore.typed_name == "hv2/web-01"
    await dispatcher.confirm(restore.confirmation.id, ALICE, safety_snapshot=False)
    assert ("revert_snapshot", WEB_ON_2.uuid) in hosts.hv2.calls
    assert all(uuid != WEB_ON_1.uuid for _, uuid in hosts.hv1.calls)

    delete = await dispatcher.handle(grammar.parse_line("/snapshot delete hv2/web-01 old"), ALICE)
    assert isinstance(delete, ConfirmDelete)
    await dispatcher.confirm(delete.confirmation.id, ALICE)
    left = {s.label for s in await catalogue.snapshots(WEB_ON_2.uuid)}
    assert "old" not in left
    assert "good" in left


async def test_holds_on_a_shared_name_are_placed_and_expired_on_their_own_vm(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    assert await hosts.connect()
    core = hosts.core
    await core.snapshots.create_snapshot("hv1/web-01", "until", actor=ALICE)
    now = core.clock.now()
    soon = now + timedelta(seconds=30)
    held = await core.holds.hold("hv1/web-01", "until", HoldKind.UNTIL, soon, ALICE)
    assert held.vm_uuid == WEB_ON_1.uuid
    assert held.hold is not None
    # the scheduler's expiry finds the VM by its record, not by the name hv2 has too
    assert await core.holds.expire(held, now + timedelta(minutes=1), ALICE)
    (row,) = await catalogue.snapshots(WEB_ON_1.uuid)
    assert row.hold is None


async def test_with_every_host_down_the_listings_name_each_host(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hosts = TwoHosts(tmp_path, catalogue)
    hosts.hv1.down = HypervisorUnavailable("Connection refused")
    hosts.hv2.down = DOWN
    assert not await hosts.connect()
    dispatcher = Dispatcher(hosts.core, None)
    for line in ("snapshot vms", "snapshot list"):
        text = await reply(dispatcher, line)
        assert "Host hv1 (qemu+ssh://root@hv1/system) is unreachable since" in text
        assert "Connection refused" in text
        assert "Host hv2 (qemu+tls://hv2/system) is unreachable since" in text
    # one VM named: the host's own answer
    with pytest.raises(HypervisorUnavailable, match="host hv2"):
        await dispatcher.handle(grammar.parse_line("/snapshot list hv2/app-01"), ALICE)
