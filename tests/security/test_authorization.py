"""R17: the authorization matrix, through the real bolt app over HTTP.

Every form of every command the grammar knows (``bot.grammar.Command``) is sent by every kind
of principal (each role, a role limited to VM patterns, a role limited to a channel, nobody,
the bot's own user) about a VM inside and one outside the patterns, from a public channel, the
limited role's channel and a DM. The expected answer comes from the access rules
(``bot.dispatch.required_action`` and the ``AccessPolicy`` of the grants below); whether a
request ran is judged by its effect (a snapshot taken, a preview with a Confirm button, a
restore modal, a hold placed, a schedule added, a VM or snapshot shown), not by its wording.
A new command without a case here fails the coverage assertion.

Then confirmations: a restore modal or a Confirm button submitted by another user, replayed,
or double-submitted at once runs at most once, and the others are told why.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
import typing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

import bot.slack as slack_package
from bot import grammar, messages
from bot.dispatch import required_action
from bot.slack import blocks, holds
from core.adapters.backupstore import DirectoryBackupStore
from core.bootstrap import Core
from core.catalogue.models import OperationRow
from core.catalogue.store import TortoiseCatalogue
from core.domain.access import AccessPolicy, Action, parse_grants
from core.domain.operation import OperationKind, OperationStatus
from core.domain.schedule import parse_when
from core.domain.snapshot import Hold, HoldKind
from core.errors import ConfirmationSpent
from core.services.snapshots import SnapshotService
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.fakes.fleet import TwoHosts
from tests.fakes.slack import FakeSlack
from tests.reliability.figures import record
from tests.slack.harness import ADMIN, SlackBot, confirm_value, running_bot

GENERAL = "C0001"
OPS = "C_OPS"
DM = "D_DM0001"
CHANNELS = (GENERAL, OPS, DM)
VMS = ("web-01", "db-01")  # inside and outside the restorer's ``web-*``

OPERATOR = "U_OPS"  # through the user group S_OPS
RESTORER = "U_RESTORER"  # restorer on web-* only
VIEWER = "U_VIEWER"
CHANNEL_ADMIN = "U_CHAN_ADMIN"  # admin, but only from #ops
NOBODY = "U_NOBODY"
WRONG_GROUP = "U_DEV"  # in a user group no grant names
BOT_USER = req.BOT_USER_ID
GROUPS = {OPERATOR: frozenset({"S_OPS"}), WRONG_GROUP: frozenset({"S_DEV"})}
GRANTS: list[dict[str, object]] = [
    {"role": "operator", "usergroups": ["S_OPS"]},
    {"role": "restorer", "users": [RESTORER], "vms": ["web-*"]},
    {"role": "viewer", "users": [VIEWER]},
    {"role": "admin", "users": [CHANNEL_ADMIN], "channels": [OPS]},
]
POLICY = parse_grants(GRANTS, [ADMIN])
PRINCIPALS = (ADMIN, OPERATOR, RESTORER, VIEWER, CHANNEL_ADMIN, NOBODY, WRONG_GROUP, BOT_USER)

# Every command form, by the grammar's class name. ``{vm}`` is the VM; ``{snap}`` a snapshot
# made for the case, ``{held}`` a held one, ``{schedule}`` a schedule made for it, ``{new}`` a
# fresh name. A grammar class without an entry fails test_every_command_has_a_case.
FORMS: dict[str, tuple[str, ...]] = {
    "ListVms": ("/snapshot vms",),
    "ListSnapshots": ("/snapshot list {vm}", "/snapshot list"),
    "CreateSnapshot": ("/snapshot {vm} {new}", "/snapshot {vm} {new} --incremental"),
    "RenameSnapshot": ("/snapshot rename {vm} {snap} {new}",),
    "DeleteSnapshot": ("/snapshot delete {vm} {snap}",),
    "Restore": ("/restore {vm} {snap}", "/restore {vm}"),
    "Prune": (
        "/prune {vm} --keep-last 1 --include-manual",
        "/prune all --keep-last 1 --include-manual",
    ),
    "HoldSnapshot": ("/snapshot hold {vm} {snap}",),
    "ReleaseHold": ("/snapshot release {vm} {held}",),
    "AddSchedule": ("/snapshot schedule add {new} {vm} daily 02:00",),
    "ListSchedules": ("/snapshot schedule list",),
    "RemoveSchedule": ("/snapshot schedule remove {schedule}",),
    "RunSchedule": ("/snapshot schedule run {schedule}",),
    "Unlock": ("/snapshot unlock {vm}",),
    "ArchiveSnapshot": ("/snapshot archive {vm} {snap}",),
    "VerifyBackups": ("/snapshot verify {vm}", "/snapshot verify"),
    "RunDrill": ("/snapshot drill {vm} {snap}",),
    "ShowUsage": ("/snapshot usage {vm}", "/snapshot usage"),
    "Offsite": (
        "/snapshot offsite",
        "/snapshot offsite copy",
        "/snapshot offsite verify",
        "/snapshot offsite undelete {vm} {snap}",
    ),
}
NOT_REQUESTS = {"Help"}  # answered in the ack from the grammar alone; no access involved


def command_classes() -> dict[str, type]:
    return {c.__name__: c for c in typing.get_args(grammar.Command)}


def test_every_command_has_a_case() -> None:
    missing = sorted(set(command_classes()) - set(FORMS) - NOT_REQUESTS)
    assert not missing, (
        f"commands without an authorization case: {missing}; add their forms to FORMS in "
        "tests/security/test_authorization.py"
    )
    for name, forms in FORMS.items():
        cls = command_classes().get(name)
        if cls is None:
            continue  # a form for a command this grammar does not have yet
        for form in forms:
            parsed = grammar.parse_line(
                form.format(vm="web-01", snap="s", held="h", schedule="k", new="n")
            )
            assert isinstance(parsed, cls), (form, parsed)


@dataclass(frozen=True)
class Matrix:
    """Who is asked about which VMs under which grants. ``hosts_of`` says which host names a
    VM (as typed) is on, for grants limited to hosts (the single-host matrix has none)."""

    vms: tuple[str, ...]
    policy: AccessPolicy
    groups: dict[str, frozenset[str]]
    principals: tuple[str, ...]
    hosts_of: Callable[[str], frozenset[str]] = lambda vm: frozenset()
    # How the host's usage report names a VM (with its host where there are several).
    shown_as: Callable[[str], str] = lambda vm: vm
    forms: frozenset[str] | None = None  # the commands asked (None: every one)


SINGLE = Matrix(VMS, POLICY, GROUPS, PRINCIPALS)


def tag(vm: str) -> str:
    """``vm`` as part of a snapshot label (``hv1/web-01`` -> ``hv1-web-01``)."""
    return vm.replace("/", "-")


def listed(text: str, vm: str) -> bool:
    """Does a listing show ``vm``? ``hv1/web-01`` is web-01 under host hv1's heading."""
    host, slash, name = vm.partition("/")
    if not slash:
        return vm in text
    sections = text.split("Host *")
    return any(section.startswith(f"{host}*") and name in section for section in sections)


@dataclass
class Case:
    n: int
    form: str
    user: str
    vm: str
    channel: str
    line: str = ""
    command: grammar.Command | None = None
    snap: str = ""
    held: str = ""
    schedule: str = ""
    new: str = ""
    reply: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    views: list[dict[str, Any]] = field(default_factory=list)


def allowed(case: Case, matrix: Matrix = SINGLE) -> dict[str, bool]:
    """What the access rules allow: per VM for listings, else one answer under the key ``""``."""
    assert case.command is not None
    groups = matrix.groups.get(case.user, frozenset())

    def may(action: Action, vm: str | None) -> bool:
        hosts = frozenset() if vm is None else matrix.hosts_of(vm)
        return matrix.policy.allows(
            case.user, groups, action, vm=vm, channel=case.channel, hosts=hosts
        )

    command = case.command
    if (
        isinstance(command, grammar.ListVms)
        or (isinstance(command, grammar.ListSnapshots) and command.vm is None)
        or (isinstance(command, grammar.ShowUsage) and command.target is None)
    ):
        return {vm: may(Action.VIEW, vm) for vm in matrix.vms}
    action, vm = required_action(command)
    ok = may(action, vm)
    if isinstance(command, (grammar.HoldSnapshot, grammar.ReleaseHold)):
        # The hold rule: the snapshot's creator (ALICE, never a principal here) or whoever may
        # delete it.
        ok = ok and may(Action.DELETE, vm)
    return {"": ok}


def _has_confirm_button(blocks_: list[dict[str, Any]]) -> bool:
    return any(
        e.get("action_id") == blocks.CONFIRM_ACTION
        for b in blocks_
        if b.get("type") == "actions"
        for e in b.get("elements", [])
    )


REFUSALS = ("You may not", "needs the *", "Only the snapshot's creator")


async def ran(
    case: Case, core: Core, services: Services | HostServices, matrix: Matrix = SINGLE
) -> dict[str, bool]:
    """Did the request run? Judged by its effect, in the shape ``allowed`` answers."""
    command = case.command
    text = case.reply
    vms = matrix.vms
    if isinstance(command, grammar.ListVms):
        return {vm: listed(text, vm) for vm in vms}
    if isinstance(command, grammar.ListSnapshots):
        if command.vm is None:
            return {vm: f"base-{tag(vm)}" in text for vm in vms}
        return {"": f"base-{tag(case.vm)}" in text}
    if isinstance(command, grammar.ShowUsage) and command.target is None:
        # The host's usage lists each VM the person may see (in bold).
        return {vm: f"*{matrix.shown_as(vm)}*" in text for vm in vms}
    labels = {s.label: s for s in await services.catalogue.snapshots()}
    if isinstance(command, (grammar.CreateSnapshot, grammar.RenameSnapshot)):
        return {"": case.new in labels}
    if isinstance(command, (grammar.DeleteSnapshot, grammar.Prune, grammar.ArchiveSnapshot)):
        return {"": _has_confirm_button(case.blocks)}
    if isinstance(command, grammar.Restore):
        callbacks = {v.get("callback_id") for v in case.views}
        return {"": bool(callbacks & {blocks.RESTORE_CALLBACK, blocks.PICK_CALLBACK})}
    if isinstance(command, grammar.HoldSnapshot):
        return {"": labels[case.snap].hold is not None}
    if isinstance(command, grammar.ReleaseHold):
        return {"": labels[case.held].hold is None}
    schedules = {s.name for s in await core.schedules.list()}
    if isinstance(command, grammar.AddSchedule):
        return {"": case.new in schedules}
    if isinstance(command, grammar.RemoveSchedule):
        return {"": case.schedule not in schedules}
    if isinstance(command, grammar.ListSchedules):
        assert case.schedule
        return {"": case.schedule in text}
    # No effect to look at (running a schedule needs the scheduler, which this front end is
    # built without; a new command): it ran unless it was refused.
    return {"": not any(r in text for r in REFUSALS)}


@dataclass
class Tally:
    cases: int = 0
    decisions: int = 0
    unauthorized: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)
    refusals: int = 0
    forms: set[str] = field(default_factory=set)


@pytest.fixture
async def authz_bot(core: Core, slack: FakeSlack) -> AsyncIterator[SlackBot]:
    # Hundreds of requests on a shared 2-core machine: a modal must not miss Slack's 3 s
    # trigger window because the machine is busy; that window is not what is tested here.
    slack.trigger_ttl = 30.0
    slack.usergroups["S_DEV"] = [WRONG_GROUP]
    async with running_bot(core, slack, grants=GRANTS) as running:
        yield running


@dataclass
class HostServices:
    """What the matrix uses of a core over several hosts (``Services`` has one host's)."""

    service: SnapshotService
    catalogue: TortoiseCatalogue


async def _prepare(case: Case, core: Core, services: Services | HostServices) -> None:
    n = case.n
    case.new = f"new-{n}"
    if "{snap}" in case.form or case.form.startswith("/restore"):
        case.snap = f"snap-{n}"
        await services.service.create_snapshot(case.vm, case.snap, actor=ALICE)
    if "{held}" in case.form:
        case.held = f"held-{n}"
        created = await services.service.create_snapshot(case.vm, case.held, actor=ALICE)
        vm = await services.service.vm(case.vm)
        await services.catalogue.set_hold(
            vm.uuid, created.snapshot.libvirt_name, Hold(HoldKind.INDEFINITE)
        )
    if "{schedule}" in case.form or case.form == "/snapshot schedule list":
        case.schedule = f"sched-{n}"
        when = parse_when(["daily", "03:00"], "UTC")
        await core.schedules.add(case.schedule, case.vm, when, None, GENERAL, ALICE)
    case.line = case.form.format(
        vm=case.vm, snap=case.snap, held=case.held, schedule=case.schedule, new=case.new
    )
    case.command = grammar.parse_line(case.line)


async def settled(bot: SlackBot, trigger_id: str | None = None) -> None:
    """Wait until what a request started is over. A restore opens its modal inside the
    listener, after the ack and outside the background jobs: wait for that call first, since
    the modal's content is filled by a job it starts."""
    if trigger_id is not None:
        await bot.slack.wait_until(
            lambda: any(
                c.params.get("trigger_id") == trigger_id and c.response is not None
                for c in bot.slack.calls_to("views.open")
            ),
            timeout=30,
            what="the modal's views.open",
        )
    await bot.idle()


async def _send(bot: SlackBot, case: Case) -> None:
    """The command as Slack sends it; everything the user sees comes back into ``case``."""
    command, _, text = case.line.partition(" ")
    shared_before = len([m for m in bot.slack.messages(case.channel) if m.files])
    response_url = bot.slack.new_response_url(channel=case.channel)
    trigger_id = bot.slack.new_trigger_id(user_id=case.user)
    body = req.slash_command_body(
        command,
        text,
        response_url=response_url,
        trigger_id=trigger_id,
        user_id=case.user,
        channel_id=case.channel,
    )
    status, ack, _ = await bot.signed(body)
    assert status == 200, ack
    await settled(bot, trigger_id if command == "/restore" and not ack else None)
    posts = bot.slack.responses(response_url)
    opened = [
        c.response["view"]["id"]
        for c in bot.slack.calls_to("views.open")
        if c.params.get("trigger_id") == trigger_id and c.ok and c.response
    ]
    case.views = [bot.slack.views[v] for v in opened if v in bot.slack.views]
    case.blocks = [b for p in posts for b in p.blocks or []]
    # What was posted with a file (the usage report and its chart) went to the channel.
    shared = [m for m in bot.slack.messages(case.channel) if m.files][shared_before:]
    case.reply = "\n".join(
        [
            ack,
            *(p.text or "" for p in posts),
            json.dumps(case.views),
            json.dumps(case.blocks),
            *(json.dumps(m.blocks) for m in shared),
        ]
    )


async def run_matrix(
    bot: SlackBot,
    core: Core,
    services: Services | HostServices,
    *,
    channels: tuple[str, ...],
    principals: tuple[str, ...] | None = None,
    matrix: Matrix = SINGLE,
) -> Tally:
    tally = Tally()
    vms = matrix.vms
    for vm in vms:
        await services.service.create_snapshot(vm, f"base-{tag(vm)}", actor=ALICE)
        await services.service.create_snapshot(vm, f"extra-{tag(vm)}", actor=ALICE)
    known = command_classes()
    n = 0
    for name, forms in FORMS.items():
        if name not in known or (matrix.forms is not None and name not in matrix.forms):
            continue
        for form in forms:
            for user in principals or matrix.principals:
                for vm in vms if "{vm}" in form else vms[:1]:
                    for channel in channels:
                        n += 1
                        case = Case(n, form, user, vm, channel)
                        await _prepare(case, core, services)
                        rejected_before = await _rejections(user)
                        await _send(bot, case)
                        await _judge(case, core, services, tally, rejected_before, matrix)
                        tally.forms.add(name)
    return tally


async def _rejections(user: str) -> int:
    return await OperationRow.filter(
        status=OperationStatus.REJECTED.value, requested_by=user
    ).count()


async def _judge(
    case: Case,
    core: Core,
    services: Services | HostServices,
    tally: Tally,
    rejected_before: int,
    matrix: Matrix = SINGLE,
) -> None:
    tally.cases += 1
    expected = allowed(case, matrix)
    actual = await ran(case, core, services, matrix)
    who = f"#{case.n} {case.user} in {case.channel}: {case.line}"
    for key, may in expected.items():
        tally.decisions += 1
        did = actual[key]
        where = f" ({key})" if key else ""
        if did and not may:
            tally.unauthorized.append(f"{who}{where} ran without the right")
        if may and not did:
            tally.not_run.append(f"{who}{where} was allowed but did not run: {case.reply[:200]}")
    single_refusal = list(expected) == [""] and not expected[""]
    if single_refusal:
        tally.refusals += 1
        if await _rejections(case.user) <= rejected_before:
            tally.unaudited.append(f"{who}: refused without an audit row")


async def test_authorization_matrix(authz_bot: SlackBot, core: Core, services: Services) -> None:
    """Every command form × every principal × both VMs, from the public channel (the full
    channel dimension runs in `make reliability`)."""
    tally = await run_matrix(authz_bot, core, services, channels=(GENERAL,))
    _report("Authorization matrix (one channel)", tally, channels=1)


@pytest.mark.reliability
async def test_authorization_matrix_every_channel(
    authz_bot: SlackBot, core: Core, services: Services
) -> None:
    """The same across the public channel, the channel-limited grant's channel and a DM."""
    tally = await run_matrix(authz_bot, core, services, channels=CHANNELS)
    _report("Authorization matrix (every channel)", tally, channels=len(CHANNELS))


# Grants limited to hosts, over two hosts that both have a web-01 (tests/fakes/fleet.py).
HV1_OPERATOR = "U_HV1_OPS"  # operator on every VM of hv1
HV2_WEB_RESTORER = "U_HV2_WEB"  # restorer on web-* of hv2
HV2_ADMIN = "U_HV2_ADMIN"  # admin, but only of hv2
HOST_GRANTS: list[dict[str, object]] = [
    {"role": "operator", "users": [HV1_OPERATOR], "hosts": ["hv1"]},
    {"role": "restorer", "users": [HV2_WEB_RESTORER], "hosts": ["hv2"], "vms": ["web-*"]},
    {"role": "admin", "users": [HV2_ADMIN], "hosts": ["hv*2"]},
]
HOST_VMS = {
    "hv1/web-01": frozenset({"hv1"}),
    "hv2/web-01": frozenset({"hv2"}),
    "db-01": frozenset({"hv1"}),  # named alone: its host is looked up
    "app-01": frozenset({"hv2"}),
}
HOSTS_MATRIX = Matrix(
    tuple(HOST_VMS),
    parse_grants(HOST_GRANTS, [ADMIN]),
    {},
    (ADMIN, HV1_OPERATOR, HV2_WEB_RESTORER, HV2_ADMIN, NOBODY),
    hosts_of=lambda vm: HOST_VMS.get(vm, frozenset()),
    shown_as=lambda vm: vm if "/" in vm else f"{min(HOST_VMS[vm])}/{vm}",
    # what needs no offsite copy (the fake hosts have no bucket)
    forms=frozenset(FORMS) - {"Offsite"},
)


@pytest.mark.reliability  # 360 signed requests: the security suite in full, make reliability
async def test_authorization_matrix_with_grants_limited_to_hosts(
    tmp_path: Path, catalogue: TortoiseCatalogue, slack: FakeSlack
) -> None:
    """Every command form × principals whose grants are limited to a host (alone, with a VM
    pattern, an admin of one host) × VMs of both hosts, named with their host or alone."""
    store = DirectoryBackupStore(tmp_path / "backups", gc_safety_margin=timedelta(0))
    try:
        hosts = TwoHosts(tmp_path, catalogue, store=store)
        assert await hosts.connect()
        slack.trigger_ttl = 30.0
        async with running_bot(hosts.core, slack, grants=HOST_GRANTS) as running:
            tally = await run_matrix(
                running,
                hosts.core,
                HostServices(hosts.core.snapshots, catalogue),
                channels=(GENERAL,),
                matrix=HOSTS_MATRIX,
            )
    finally:
        store.close()
    record(
        "Authorization matrix (grants limited to hosts)",
        f"{len(tally.forms)} commands × {len(HOSTS_MATRIX.principals)} principals (host, host "
        f"and VM pattern, admin of one host, nobody) × {len(HOST_VMS)} VMs on two hosts",
        f"{tally.cases} cases ({tally.decisions} decisions), {len(tally.unauthorized)} "
        f"unauthorized executions, {len(tally.not_run)} allowed requests that did not run",
        passed=not tally.unauthorized and not tally.not_run,
    )
    assert not tally.unauthorized, "\n".join(tally.unauthorized)
    assert not tally.not_run, "\n".join(tally.not_run)
    assert not tally.unaudited, "\n".join(tally.unaudited)
    assert tally.forms == HOSTS_MATRIX.forms & set(command_classes())


def _report(check: str, tally: Tally, *, channels: int) -> None:
    covered = set(FORMS) & set(command_classes())
    coverage = 100 * len(tally.forms & covered) // max(len(covered), 1)
    audited = tally.refusals - len(tally.unaudited)
    record(
        check,
        f"{sum(len(FORMS[f]) for f in tally.forms)} forms of {len(tally.forms)} commands × "
        f"{len(PRINCIPALS)} principals (4 roles, VM-pattern and channel limits, nobody, a "
        f"group without a grant, the bot user) × {len(VMS)} VMs × {channels} channel(s), over signed HTTP",
        f"{tally.cases} cases ({tally.decisions} decisions), {len(tally.unauthorized)} "
        f"unauthorized executions, coverage {coverage} %, {audited}/{tally.refusals} refusals "
        "audited",
        passed=not tally.unauthorized and not tally.not_run and coverage == 100,
    )
    assert not tally.unauthorized, "\n".join(tally.unauthorized)
    assert not tally.not_run, "\n".join(tally.not_run)
    assert coverage == 100


async def test_every_refusal_is_audited(
    authz_bot: SlackBot, core: Core, services: Services
) -> None:
    """README: "Every request, refusals included, is in the audit trail with the Slack user,
    team and channel". Every form, refused to a user without a role and to a restorer outside
    its VMs, leaves a REJECTED row naming the user and the channel."""
    tally = await run_matrix(
        authz_bot, core, services, channels=(GENERAL,), principals=(NOBODY, RESTORER)
    )
    assert tally.refusals > 0
    record(
        "Authorization: every refusal audited",
        f"every command form refused to a user with no role and to a VM-limited restorer "
        f"({tally.refusals} refusals)",
        f"{tally.refusals - len(tally.unaudited)}/{tally.refusals} refusals audited",
        passed=not tally.unaudited,
    )
    assert not tally.unaudited, "\n".join(tally.unaudited)


FOREIGN = "T_OTHER"  # not the workspace the app is installed in (T0001)


def _foreign_command(bot: SlackBot, text: str, **fields: str) -> bytes:
    """``/snapshot <text>`` by the admin's user id, with Slack's team fields overridden."""
    payload = req.slash_command_payload(
        "/snapshot",
        text,
        response_url=bot.slack.new_response_url(channel=GENERAL),
        trigger_id=bot.slack.new_trigger_id(user_id=ADMIN),
        user_id=ADMIN,
        channel_id=GENERAL,
    )
    payload.update(fields)
    return urlencode(payload).encode()


async def test_a_user_from_another_workspace_runs_nothing(
    authz_bot: SlackBot, services: Services
) -> None:
    bot = authz_bot
    sent = {
        "team_id differs": _foreign_command(bot, "web-01 foreign-team", team_id=FOREIGN),
        "enterprise differs": _foreign_command(
            bot, "web-01 foreign-grid", enterprise_id="E_OTHER", is_enterprise_install="true"
        ),
    }
    for body in sent.values():
        status, _, _ = await bot.signed(body)
        assert status == 200
    await bot.idle()

    # Slack Connect: the admin's own delete preview, confirmed by a click whose user belongs
    # to another organisation (user.team_id) in the shared channel.
    await services.service.create_snapshot("web-02", "connect", actor=ALICE)
    answer = await bot.command("/snapshot delete web-02 connect", user=ADMIN, channel=GENERAL)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    value = confirm_value(preview[0].blocks)
    payload = req.block_actions_payload(
        action_id=blocks.CONFIRM_ACTION,
        value=value,
        user_id=ADMIN,
        channel_id=GENERAL,
        message_ts="1700000000.000001",
        response_url=answer.response_url,
        trigger_id=bot.slack.new_trigger_id(user_id=ADMIN),
    )
    payload["user"]["team_id"] = FOREIGN
    status, _, _ = await bot.signed(req.interaction_body(payload))
    assert status == 200
    await bot.idle()

    labels = {s.label for s in await services.catalogue.snapshots()}
    ran = {
        "team_id differs": "foreign-team" in labels,
        "enterprise differs": "foreign-grid" in labels,
        "Slack Connect user_team differs": "connect" not in labels,
    }
    executed = [name for name, did in ran.items() if did]
    record(
        "Authorization: another workspace / Slack Connect",
        "a granted user id from another workspace, another Enterprise Grid org, and a Slack "
        "Connect user (user.team_id differs) confirming a delete",
        f"{len(ran)} requests, {len(executed)} unauthorized executions",
        passed=not executed,
    )
    assert not executed, executed


def _spent_replies(texts: list[str]) -> int:
    """Replies that tell someone a confirmation is not theirs or already ran (the product's
    own wording for ``ConfirmationSpent``)."""
    markers = [
        messages.error_text(ConfirmationSpent(kind, reason, "U_X")).split("U_X")[0]
        for kind in ("restore", "delete")
        for reason in ("used", "not_yours")
    ]
    return sum(any(m in t for m in markers) for t in texts)


async def test_a_confirmation_runs_once_and_only_for_its_requester(
    authz_bot: SlackBot, services: Services
) -> None:
    """R2: a restore modal and a Confirm button, each submitted by another user, by someone
    with no role, five times at once by their requester, and replayed afterwards: one restore
    and one delete; every other submission is told why."""
    bot = authz_bot
    hv = services.hv
    hv.delay = 0.2  # the restore is still running while the duplicates arrive
    await services.service.create_snapshot("web-01", "golden", actor=ALICE)
    await services.service.create_snapshot("web-02", "doomed", actor=ALICE)

    # The restore modal.
    answer = await bot.command("/restore web-01 golden", user=RESTORER, channel=GENERAL)
    view = await bot.slack.wait_until(
        lambda: next(
            (
                v
                for v in bot.slack.views.values()
                if v.get("callback_id") == blocks.RESTORE_CALLBACK
            ),
            None,
        ),
        what="the restore modal",
    )
    typed = {blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": "web-01"}}}
    await bot.submit(view, typed, user=ADMIN)  # someone else, with every right
    await bot.submit(view, typed, user=NOBODY)
    await bot.idle()
    assert not any(m == "revert_snapshot" for m, _ in hv.calls), "another user's submit ran"
    own = req.submission_for(view, values=typed, user_id=RESTORER)
    await asyncio.gather(*(bot.signed(own) for _ in range(5)))
    await bot.idle()
    await bot.signed(own)  # replayed after it ran
    await bot.idle()
    restore_submits = 2 + 5 + 1

    # The Confirm button of a delete preview.
    preview = await bot.command("/snapshot delete web-02 doomed", user=ADMIN, channel=GENERAL)
    shown = await bot.slack.wait_until(lambda: bot.slack.responses(preview.response_url))
    value = confirm_value(shown[0].blocks)
    click_urls: list[str] = []

    def click(user: str) -> bytes:
        url = bot.slack.new_response_url(channel=GENERAL)
        click_urls.append(url)
        return req.block_actions_body(
            action_id=blocks.CONFIRM_ACTION,
            value=value,
            user_id=user,
            channel_id=GENERAL,
            message_ts="1700000000.000001",
            response_url=url,
            trigger_id=bot.slack.new_trigger_id(user_id=user),
        )

    await bot.signed(click(OPERATOR))
    await bot.idle()
    assert not any(m == "delete_snapshot" for m, _ in hv.calls), "another user's click ran"
    double = [click(ADMIN) for _ in range(5)]
    await asyncio.gather(*(bot.signed(body) for body in double))
    await bot.idle()
    status, _, _ = await bot.signed(double[0])  # a captured click re-sent
    assert status == 200
    await bot.idle()
    delete_clicks = 1 + 5 + 1

    reverts = sum(m == "revert_snapshot" for m, _ in hv.calls)
    deletes = sum(m == "delete_snapshot" for m, _ in hv.calls)
    restore_told = _spent_replies([p.text or "" for p in bot.slack.responses(answer.response_url)])
    delete_told = _spent_replies(
        [p.text or "" for url in click_urls for p in bot.slack.responses(url)]
    )
    ops = await services.catalogue.operations(limit=1000)
    restores = [o for o in ops if o.kind is OperationKind.RESTORE]
    record(
        "Confirmations run once (R2)",
        f"a restore modal submitted {restore_submits}× (another user, no role, 5× at once, a "
        f"replay) and a Confirm button clicked {delete_clicks}× (another user, 5× at once, a "
        "replay), over signed HTTP",
        f"reverts per confirmation {reverts}, deletes per confirmation {deletes}; "
        f"{restore_told + delete_told} of {restore_submits + delete_clicks - 3} duplicates told "
        "why (a replayed click is dropped silently)",
        passed=reverts == 1 and deletes == 1,
    )
    assert reverts == 1
    assert [o.status for o in restores] == [OperationStatus.SUCCEEDED]
    assert deletes == 1
    assert "doomed" not in {s.label for s in await services.catalogue.snapshots()}
    # Every refused restore submission is told why: 2 other users, 4 losers, 1 replay.
    assert restore_told == 7, bot.slack.responses(answer.response_url)
    # The other user and the 4 losing clicks (the replay is the same click: dropped).
    assert delete_told == 5


# ----------------------------------------------------------------- buttons and modals


def interactive_surfaces() -> set[tuple[str, str]]:
    """``(kind, id)`` of every button and modal the Slack front end listens to, read from its
    ``@app.action(...)``, ``@app.view(...)`` and ``@app.view_closed(...)`` registrations."""
    found = set()
    for path in Path(slack_package.__file__).parent.glob("*.py"):
        module = importlib.import_module(f"bot.slack.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("action", "view", "view_closed") or not node.args:
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "app"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name):
                value = getattr(getattr(module, arg.value.id), arg.attr)
            elif isinstance(arg, ast.Name):
                value = getattr(module, arg.id)
            else:
                value = ast.literal_eval(arg)
            found.add((node.func.attr, str(value)))
    return found


BUTTONS: dict[tuple[str, str], str] = {
    ("action", blocks.CONFIRM_ACTION): "Confirm under someone's delete preview",
    ("action", blocks.CANCEL_ACTION): "Cancel under someone's delete preview",
    ("action", holds.VERIFIED_ACTION): "Verified under a before-change hold",
    ("action", holds.RESTORE_ACTION): "Restore under a before-change hold",
    ("view", blocks.RESTORE_CALLBACK): "submitting someone's typed-name restore modal",
    ("view_closed", blocks.RESTORE_CALLBACK): "closing someone's restore modal",
    ("view", blocks.PICK_CALLBACK): "picking a snapshot in someone's /restore picker",
}


def test_every_button_and_modal_has_a_case() -> None:
    missing = interactive_surfaces() - set(BUTTONS)
    assert not missing, (
        f"buttons or modals without an authorization case: {sorted(missing)}; add them to "
        "BUTTONS in tests/security/test_authorization.py"
    )


def _first_confirm_value(posts: list[Any]) -> str:
    return confirm_value([b for p in posts for b in p.blocks or []])


async def _admin_view(bot: SlackBot, line: str, callback: str) -> dict[str, Any]:
    """The modal ``line`` opens for the admin, once filled in."""
    trigger = bot.slack.new_trigger_id(user_id=ADMIN)
    command, _, text = line.partition(" ")
    body = req.slash_command_body(
        command,
        text,
        response_url=bot.slack.new_response_url(channel=GENERAL),
        trigger_id=trigger,
        user_id=ADMIN,
        channel_id=GENERAL,
    )
    await bot.signed(body)
    await settled(bot, trigger)
    (opened,) = [c for c in bot.slack.calls_to("views.open") if c.params["trigger_id"] == trigger]
    view = bot.slack.views[opened.response["view"]["id"]]
    assert view.get("callback_id") == callback, view
    return view


async def _button_case(
    bot: SlackBot, services: Services, surface: tuple[str, str], user: str, vm: str, n: int
) -> tuple[bool, bool]:
    """Set up ``surface`` as its owner would, let ``user`` use it; (allowed, ran)."""
    groups = GROUPS.get(user, frozenset())

    def may(action: Action) -> bool:
        return POLICY.allows(user, groups, action, vm=vm, channel=GENERAL)

    kind, ident = surface
    label = f"b{n}"
    created = await services.service.create_snapshot(vm, label, actor=ALICE)
    reverts = sum(m == "revert_snapshot" for m, _ in services.hv.calls)
    url = bot.slack.new_response_url(channel=GENERAL)
    trigger = bot.slack.new_trigger_id(user_id=user)

    def click(action_id: str, value: str) -> bytes:
        return req.block_actions_body(
            action_id=action_id,
            value=value,
            user_id=user,
            channel_id=GENERAL,
            message_ts="1700000000.000001",
            response_url=url,
            trigger_id=trigger,
        )

    if ident in (blocks.CONFIRM_ACTION, blocks.CANCEL_ACTION):
        answer = await bot.command(f"/snapshot delete {vm} {label}", user=ADMIN, channel=GENERAL)
        posts = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
        value = _first_confirm_value(posts)
        await bot.signed(click(ident, value))
        await bot.idle()
        confirmation = await services.catalogue.get_confirmation(value)
        assert confirmation is not None
        if ident == blocks.CONFIRM_ACTION:
            ran = label not in {s.label for s in await services.catalogue.snapshots()}
        else:
            ran = confirmation.used_at is not None
        return user == ADMIN, ran
    if ident in (holds.VERIFIED_ACTION, holds.RESTORE_ACTION):
        await services.catalogue.set_hold(
            created.snapshot.vm_uuid, created.snapshot.libvirt_name, Hold(HoldKind.VERIFIED)
        )
        await bot.signed(click(ident, f"{vm}\n{label}"))
        await settled(bot, trigger if ident == holds.RESTORE_ACTION else None)
        if ident == holds.VERIFIED_ACTION:
            snap = next(s for s in await services.catalogue.snapshots() if s.label == label)
            return may(Action.DELETE), snap.hold is None
        opened = [c for c in bot.slack.calls_to("views.open") if c.params["trigger_id"] == trigger]
        views = [bot.slack.views[c.response["view"]["id"]] for c in opened if c.ok]
        return may(Action.RESTORE), any(
            v.get("callback_id") == blocks.RESTORE_CALLBACK for v in views
        )
    if ident == blocks.RESTORE_CALLBACK:
        view = await _admin_view(bot, f"/restore {vm} {label}", blocks.RESTORE_CALLBACK)
        meta = json.loads(view["private_metadata"])
        payload = req.submission_payload_for(
            view,
            values={blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": vm}}},
            user_id=user,
        )
        if kind == "view_closed":
            payload["type"] = "view_closed"
            payload["is_cleared"] = False
        await bot.signed(req.interaction_body(payload))
        await bot.idle()
        if kind == "view_closed":
            confirmation = await services.catalogue.get_confirmation(meta["id"])
            assert confirmation is not None
            return user == ADMIN, confirmation.used_at is not None
        after = sum(m == "revert_snapshot" for m, _ in services.hv.calls)
        return user == ADMIN, after > reverts
    assert ident == blocks.PICK_CALLBACK
    view = await _admin_view(bot, f"/restore {vm}", blocks.PICK_CALLBACK)
    values = {blocks.PICK_BLOCK: {blocks.PICK_INPUT: {"selected_option": {"value": label}}}}
    await bot.signed(req.submission_for(view, values=values, user_id=user))
    await bot.idle()
    shown = bot.slack.views[view["id"]]
    # Picking only opens the typed-name step, as a request of the one who picked.
    return may(Action.RESTORE), shown.get("callback_id") == blocks.RESTORE_CALLBACK


async def test_button_and_modal_matrix(authz_bot: SlackBot, services: Services) -> None:
    """Every button and modal × every principal × both VMs: another person's confirmation never
    runs (nor is cancelled) by anyone else; Verified needs the creator or the delete right;
    the hold's Restore button and the picker open a restore only for someone who may restore."""
    tally = Tally()
    n = 0
    for surface in sorted(BUTTONS):
        for user in PRINCIPALS:
            for vm in VMS:
                n += 1
                may, did = await _button_case(authz_bot, services, surface, user, vm, n)
                tally.cases += 1
                tally.decisions += 1
                who = f"#{n} {user}: {BUTTONS[surface]} ({surface[1]}) on {vm}"
                if did and not may:
                    tally.unauthorized.append(f"{who} ran without the right")
                if may and not did:
                    tally.not_run.append(f"{who} was allowed but did not run")
    record(
        "Authorization: buttons and modals",
        f"{len(BUTTONS)} buttons and modal actions × {len(PRINCIPALS)} principals × {len(VMS)} "
        "VMs, each on a request someone else made, over signed HTTP",
        f"{tally.cases} cases, {len(tally.unauthorized)} unauthorized executions, coverage "
        f"{100 * len(set(BUTTONS) & interactive_surfaces()) // len(interactive_surfaces())} %",
        passed=not tally.unauthorized and not tally.not_run,
    )
    assert not tally.unauthorized, "\n".join(tally.unauthorized)
    assert not tally.not_run, "\n".join(tally.not_run)


async def test_a_user_removed_from_a_group_loses_the_role_when_slack_says_so(
    authz_bot: SlackBot, services: Services
) -> None:
    """Group membership is cached for 5 minutes; Slack's ``subteam_members_changed`` event
    ends the cache at once, so a removed operator cannot snapshot any more."""
    bot = authz_bot
    first = await bot.command("/snapshot web-01 while-member", user=OPERATOR, channel=GENERAL)
    assert first.status == 200
    await bot.idle()
    assert "while-member" in {s.label for s in await services.catalogue.snapshots()}

    bot.slack.usergroups["S_OPS"] = []
    payload = req.app_home_opened_event_payload(ADMIN)
    payload["event"] = {
        "type": "subteam_members_changed",
        "subteam_id": "S_OPS",
        "team_id": req.TEAM_ID,
        "removed_users": [OPERATOR],
        "removed_users_count": "1",
        "event_ts": payload["event"]["event_ts"],
    }
    status, _, _ = await bot.signed(json.dumps(payload).encode())
    assert status == 200
    await bot.idle()

    rejected = await _rejections(OPERATOR)
    after = await bot.command("/snapshot web-01 after-removal", user=OPERATOR, channel=GENERAL)
    await bot.idle()
    labels = {s.label for s in await services.catalogue.snapshots()}
    ran = "after-removal" in labels
    audited = await _rejections(OPERATOR) == rejected + 1
    record(
        "Authorization: removed from a group, warm cache",
        "an operator through a user group snapshots, is removed from the group, Slack sends "
        "subteam_members_changed, the operator tries again",
        f"{int(ran)} unauthorized executions after removal, refusal audited: {audited}",
        passed=not ran and audited,
    )
    assert not ran, bot.slack.responses(after.response_url)
    assert audited
