"""R1: 50 mixed requests at one VM at once, from Slack and the console together.

Snapshots, restores (through the typed-name modal or the console prompt), deletes and prunes
(through their Confirm button or typed name), renames and listings all aim at web-01 on a fake
hypervisor whose every mutating call takes 20-150 ms, while another VM takes snapshots
meanwhile. Slack requests are signed HTTP requests through the real bolt app, each from its own
channel; console requests come from separate terminals (each its own OS user).

What must hold: at most one mutating call in flight on a VM at any moment (the fake hypervisor
is instrumented); every request ends in exactly one final reply its user sees, and every
request that changed or tried to change something in exactly one terminal operation record;
no operation left running and no lock row left; the catalogue agrees with the hypervisor; the
other VM's snapshots all succeeded while web-01 was contended.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot import messages
from bot.console import Console
from bot.slack import blocks
from core.bootstrap import Core
from core.catalogue.models import ConfirmationRow, VmLockRow
from core.domain.operation import Operation, OperationKind
from core.domain.snapshot import CatalogueStatus
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.fakes.hypervisor import FakeHypervisor
from tests.fakes.slack import FakeSlack
from tests.reliability.figures import record
from tests.slack.harness import ADMIN, SlackBot, running_bot

TARGET = "web-01"
OTHER = "web-02"
KINDS = ("snapshot", "restore", "delete", "rename", "list", "prune")
MUTATING = {"snapshot", "restore", "delete", "rename"}
WAIT = 90.0  # seconds a single request may take on a loaded 2-core machine


class InFlight:
    """Wraps the fake hypervisor's mutating calls: latency, and how many run at once per VM."""

    def __init__(self, hv: FakeHypervisor, rng: random.Random) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.calls = 0
        inner = hv._mutate

        async def mutate(method: str, uuid: str) -> None:
            self.calls += 1
            self.now[uuid] += 1
            self.most[uuid] = max(self.most[uuid], self.now[uuid])
            try:
                await asyncio.sleep(rng.uniform(0.02, 0.15))
                await inner(method, uuid)
            finally:
                self.now[uuid] -= 1

        hv._mutate = mutate  # type: ignore[method-assign]


@dataclass
class Request:
    n: int
    kind: str
    via: str  # "slack" or "console"
    line: str
    tag: str  # unique over rounds: names the request's channel or terminal user
    answer: str = ""  # what the console user types at a prompt
    start_after: float = 0.0
    channel: str = ""
    user: str = ""
    response_url: str = ""
    trigger_id: str = ""
    click_url: str = ""
    finals: list[str] = field(default_factory=list)
    console_out: str = ""


def plan(round_: int, rng: random.Random, labels: list[str], spread: float) -> list[Request]:
    """50 requests: every kind, Slack and console mixed, aimed at ``labels`` of web-01,
    arriving within ``spread`` seconds (0: all at once)."""
    requests = []
    for n in range(50):
        kind = KINDS[n % len(KINDS)]
        via = "console" if n % 3 == 0 else "slack"
        # Restores aim at the newer half, deletes and renames at the older half (which the
        # prunes also take): a restore then fails only if the VM is busy, not for want of a
        # snapshot, and restores do run in the race.
        half = len(labels) // 2
        label = rng.choice(labels[half:] if kind == "restore" else labels[:half])
        tag = f"r{round_}n{n}"
        line = {
            "snapshot": f"/snapshot {TARGET} race-{tag}",
            "restore": f"/restore {TARGET} {label}",
            "delete": f"/snapshot delete {TARGET} {label}",
            "rename": f"/snapshot rename {TARGET} {label} renamed-{tag}",
            "list": f"/snapshot list {TARGET}",
            "prune": f"/prune {TARGET} --keep-last 8 --include-manual",
        }[kind]
        start = rng.uniform(0, spread) if spread else 0.0
        requests.append(Request(n, kind, via, line, tag, answer=TARGET, start_after=start))
    rng.shuffle(requests)
    return requests


def _has_confirm(blocks_: list[dict[str, Any]] | None) -> str | None:
    for b in blocks_ or []:
        if b.get("type") == "actions":
            for e in b.get("elements", []):
                if e.get("action_id") == blocks.CONFIRM_ACTION:
                    return str(e["value"])
    return None


async def _slack_request(bot: SlackBot, r: Request) -> None:
    slack = bot.slack
    r.channel, r.user = f"C_{r.tag.upper()}", ADMIN
    r.response_url = slack.new_response_url(channel=r.channel)
    r.trigger_id = slack.new_trigger_id(user_id=r.user)
    command, _, text = r.line.partition(" ")
    body = req.slash_command_body(
        command,
        text,
        response_url=r.response_url,
        trigger_id=r.trigger_id,
        user_id=r.user,
        channel_id=r.channel,
    )
    status, ack, _ = await bot.signed(body)
    assert status == 200, ack
    if ack:
        r.finals.append(ack)  # a usage error, answered in the ack
        return
    if r.kind == "restore":
        await _through_modal(bot, r)
    elif r.kind in ("delete", "prune"):
        await _through_button(bot, r)


async def _through_modal(bot: SlackBot, r: Request) -> None:
    slack = bot.slack

    def filled() -> dict[str, Any] | None:
        for c in slack.calls_to("views.open"):
            if c.params.get("trigger_id") == r.trigger_id and c.response is not None:
                if not c.ok:
                    return {"failed": c.error}
                view_id = c.response["view"]["id"]
                updated = any(
                    u.params.get("view_id") == view_id and u.response is not None
                    for u in slack.calls_to("views.update")
                )
                return slack.views[view_id] if updated else None
        return None

    view = await slack.wait_until(filled, timeout=WAIT, what=f"request {r.n}'s modal")
    if view.get("callback_id") != blocks.RESTORE_CALLBACK:
        return  # refused inside the modal (or it could not open): judged with the replies
    typed = {blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": TARGET}}}
    answer = await bot.submit(view, typed, user=r.user)
    assert answer is None, answer


async def _through_button(bot: SlackBot, r: Request) -> None:
    slack = bot.slack
    posts = await slack.wait_until(
        lambda: slack.responses(r.response_url), timeout=WAIT, what=f"request {r.n}'s preview"
    )
    value = _has_confirm(posts[0].blocks)
    if value is None:
        return  # refused, or nothing to do: that post is the final reply
    r.click_url = slack.new_response_url(channel=r.channel)
    body = req.block_actions_body(
        action_id=blocks.CONFIRM_ACTION,
        value=value,
        user_id=r.user,
        channel_id=r.channel,
        message_ts="1700000000.000001",
        response_url=r.click_url,
        trigger_id=slack.new_trigger_id(user_id=r.user),
    )
    status, text, _ = await bot.signed(body)
    assert status == 200, text


async def _console_request(core: Core, r: Request, monkeypatch: pytest.MonkeyPatch) -> None:
    r.user = f"console:{r.tag}"
    # A terminal per operator: the console acts as the OS user running it.
    with monkeypatch.context() as patch:
        patch.setattr(getpass, "getuser", lambda: r.tag)
        out = Terminal()
        console = Console(core, io.StringIO(r.answer + "\n"), out)
    await console.handle(r.line)
    r.console_out = out.getvalue()
    r.finals = out.finals()


class Terminal(io.StringIO):
    """A console's screen, write by write: the console prints each message in one write, a
    prompt without a newline, progress lines indented with "…"."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def finals(self) -> list[str]:
        """The messages printed after the last prompt that are not progress: the replies."""
        prompts = [i for i, w in enumerate(self.writes) if w and not w.endswith("\n")]
        after = self.writes[prompts[-1] + 1 :] if prompts else self.writes
        return [w for w in after if w.strip() and not w.startswith("  … ")]


async def _other_vm(core: Core, round_: int, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Snapshots of the other VM, one after another, while web-01 is contended."""
    results = []
    for i in range(5):
        with monkeypatch.context() as patch:
            patch.setattr(getpass, "getuser", lambda: "other")
            console = Console(core, io.StringIO(), io.StringIO())
        results.append(await console.handle(f"/snapshot {OTHER} other-r{round_}-{i}"))
    return results


def _slack_finals(bot: SlackBot, r: Request) -> tuple[list[str], list[str]]:
    """The final replies request ``r``'s user saw in Slack, and live messages left unfinished."""
    slack = bot.slack
    finals = list(r.finals)
    for p in slack.responses(r.response_url):
        if p.status == 200 and not _has_confirm(p.blocks):
            finals.append(p.text or "")
    if r.click_url:
        confirmed_note = messages.confirmed_by(r.user, r.kind)
        for p in slack.responses(r.click_url):
            if p.status == 200 and (p.text or "") != confirmed_note:
                finals.append(p.text or "")
    unfinished = []
    for m in slack.messages(r.channel):
        if m.thread_ts is not None:
            continue  # a milestone under the live message, not a reply of its own
        if m.text.startswith(("✅", "❌")):
            finals.append(m.text)
        else:
            unfinished.append(m.text)
    finals += [e.text for e in slack.ephemerals if e.channel == r.channel]
    for c in slack.calls_to("views.open"):
        if c.params.get("trigger_id") == r.trigger_id and c.ok and c.response:
            view = slack.views.get(c.response["view"]["id"], {})
            shown = json.dumps(view.get("blocks", []))
            if not view.get("callback_id") and messages.LOADING_TEXT not in shown:
                finals.append(shown)  # a refusal inside the modal
    return finals, unfinished


def _records(ops: list[Operation], r: Request) -> list[Operation]:
    if r.via == "slack":
        return [o for o in ops if o.channel == r.channel]
    return [o for o in ops if o.requested_by == r.user]


async def _claimed(r: Request) -> bool:
    """Was the request's confirmation used (modal submitted, Confirm clicked, name typed)?"""
    mine = ConfirmationRow.filter(used_at__isnull=False)
    if r.via == "slack":
        return await mine.filter(channel=r.channel).exists()
    return await mine.filter(requested_by=r.user).exists()


@dataclass
class Figures:
    requests: int = 0
    max_in_flight: int = 0
    lost: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    other_ok: int = 0
    other_total: int = 0


async def race_round(
    bot: SlackBot,
    core: Core,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    round_: int,
    figures: Figures,
    *,
    spread: float = 0.0,
) -> None:
    rng = random.Random(round_)
    hv = services.hv
    in_flight = InFlight(hv, rng)
    seeds = [f"seed-{round_}-{i:02d}" for i in range(16)]
    for label in seeds:
        await services.service.create_snapshot(TARGET, label, actor=ALICE)
    requests = plan(round_, rng, seeds, spread)
    ops_before = {o.id for o in await services.catalogue.operations(limit=100_000)}

    async def one(r: Request) -> None:
        await asyncio.sleep(r.start_after)
        if r.via == "slack":
            await _slack_request(bot, r)
        else:
            await _console_request(core, r, monkeypatch)

    async with asyncio.timeout(4 * WAIT):
        *_, other = await asyncio.gather(
            *(one(r) for r in requests), _other_vm(core, round_, monkeypatch)
        )
        await bot.idle()

    ops = [o for o in await services.catalogue.operations(limit=100_000) if o.id not in ops_before]
    for r in requests:
        figures.requests += 1
        if r.via == "slack":
            finals, unfinished = _slack_finals(bot, r)
            if unfinished:
                figures.lost.append(f"#{r.n} {r.line}: live message never finished: {unfinished}")
            if len(finals) != 1:
                figures.lost.append(f"#{r.n} {r.line}: {len(finals)} final replies: {finals}")
        elif len(r.finals) != 1:
            figures.lost.append(
                f"#{r.n} {r.line} (console): {len(r.finals)} final replies: {r.console_out!r}"
            )
        mine = _records(ops, r)
        confirmed = await _claimed(r)
        running = [o for o in mine if not o.status.is_terminal]
        if running:
            figures.lost.append(f"#{r.n} {r.line}: operation left running: {running}")
        acted = r.kind in ("snapshot", "rename") or (r.kind in ("restore", "delete") and confirmed)
        kinds = {o.kind for o in mine}
        if acted and len(mine) != 1:
            figures.lost.append(f"#{r.n} {r.line}: {len(mine)} operation records: {mine}")
        if r.kind == "list" and mine:
            figures.lost.append(f"#{r.n} {r.line}: a listing recorded operations: {mine}")
        if r.kind == "prune" and kinds - {OperationKind.DELETE, OperationKind.PRUNE}:
            figures.lost.append(f"#{r.n} {r.line}: a prune recorded {kinds}")
        if r.kind == "prune" and confirmed and OperationKind.PRUNE not in kinds:
            # each deletion is recorded, and the confirmed prune itself once, even when its
            # snapshots all went meanwhile and it deleted nothing
            figures.lost.append(f"#{r.n} {r.line}: a confirmed prune left no final record")
        outcome = mine[0].status.value if len(mine) == 1 else f"{len(mine)} records"
        figures.outcomes[f"{r.kind}: {outcome}"] += 1

    figures.statuses.update(o.status.value for o in ops if o.vm_name == TARGET)
    left_running = [o for o in ops if not o.status.is_terminal]
    if left_running:
        figures.lost.append(f"operations left running: {left_running}")
    locks = await VmLockRow.all().values()
    if locks:
        figures.lost.append(f"lock rows left: {locks}")
    for vm in (TARGET, OTHER):
        uuid = (await hv.get_vm(vm)).uuid
        in_catalogue = {
            s.libvirt_name
            for s in await services.catalogue.snapshots(uuid)
            if s.status is CatalogueStatus.PRESENT
        }
        if in_catalogue != set(hv.vms[uuid].snapshots):
            figures.lost.append(
                f"{vm}: catalogue {sorted(in_catalogue)} != hypervisor "
                f"{sorted(hv.vms[uuid].snapshots)}"
            )
    target_uuid = (await hv.get_vm(TARGET)).uuid
    figures.max_in_flight = max(figures.max_in_flight, *in_flight.most.values())
    figures.other_total += len(other)
    figures.other_ok += sum(other)
    if not all(other):
        figures.lost.append(f"{OTHER}'s snapshots did not all succeed: {other}")
    other_ops = [o for o in ops if o.vm_name == OTHER]
    target_ops = [o for o in ops if o.vm_uuid == target_uuid and o.finished_at is not None]
    if target_ops and other_ops:
        last_target = max(o.finished_at for o in target_ops if o.finished_at)
        if not any(o.started_at < last_target for o in other_ops):
            figures.lost.append(f"{OTHER} waited for {TARGET}: nothing ran meanwhile")
    del hv._mutate  # the class's own again, for the next round


@pytest.fixture
async def race_bot(core: Core) -> AsyncIterator[SlackBot]:
    # Fifty requests at once on a shared 2-core machine: a modal must not miss Slack's 3 s
    # trigger window because the machine is busy; that window is not what is tested here.
    async with FakeSlack(trigger_ttl=60.0) as slack, running_bot(core, slack) as bot:
        yield bot


def _report(check: str, rounds: int, figures: Figures, spreads: str) -> None:
    record(
        check,
        f"{rounds} round(s) of 50 requests at one VM (snapshot, restore through the "
        "modal or prompt, delete and prune through Confirm or typed name, rename, list; Slack "
        f"over signed HTTP and the console), 20-150 ms per libvirt call, {OTHER} snapshotting "
        f"meanwhile; {spreads}",
        f"{figures.requests} requests; {TARGET} operations: "
        + ", ".join(f"{n} {status}" for status, n in sorted(figures.statuses.items()))
        + f"; max mutating calls in flight per VM "
        f"{figures.max_in_flight}, lost {len(figures.lost)}, {OTHER} "
        f"{figures.other_ok}/{figures.other_total} succeeded",
        lost=len(figures.lost),
        passed=figures.max_in_flight == 1 and not figures.lost,
    )
    assert figures.max_in_flight == 1
    assert not figures.lost, "\n".join(figures.lost)


async def test_fifty_mixed_requests_at_one_vm(
    race_bot: SlackBot, core: Core, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = Figures()
    await race_round(race_bot, core, services, monkeypatch, 0, figures)
    _report("Race: 50 mixed requests at one VM", 1, figures, "all at once")


@pytest.mark.reliability
async def test_fifty_mixed_requests_at_one_vm_many_rounds(
    race_bot: SlackBot, core: Core, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = int(os.environ.get("SNAPBOT_RACE_ROUNDS", "6"))
    figures = Figures()
    for round_ in range(1, rounds + 1):
        # Odd rounds all at once; even rounds arrive over 10 s, so confirmations, restores and
        # prunes interleave with running operations instead of meeting a busy VM.
        spread = 0.0 if round_ % 2 else 10.0
        await race_round(race_bot, core, services, monkeypatch, round_, figures, spread=spread)
    _report(
        f"Race: {rounds} rounds of 50 mixed requests",
        rounds,
        figures,
        "odd rounds all at once, even rounds spread over 10 s",
    )
