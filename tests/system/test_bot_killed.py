"""snapbot SIGKILLed at every stage of create, restore, delete and prune on the real guest,
then started again (issue 7, "Faults"): the outcome is recorded truthfully, nothing stays
running or locked, the catalogue agrees with libvirt, and the requester hears the final word.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from bot import messages
from core.bootstrap import build_core
from core.catalogue.models import OperationRow, VmLockRow
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.operation import Operation
from core.domain.snapshot import CatalogueStatus
from tests.conftest import ALICE
from tests.reliability.figures import record
from tests.system.conftest import TEST_URI, Guest, Guests, open_test_conn

# Killing the bot mid-operation is a fault run: `make reliability` (it ran in both before).
pytestmark = [pytest.mark.system, pytest.mark.reliability]

ROOT = Path(__file__).resolve().parents[2]
INSIDE = -1.0


@dataclass(frozen=True)
class Kill:
    action: str  # create, restore, delete, prune
    stage: str
    # seconds after the stage began (0: at once, before its libvirt call); INSIDE: once
    # libvirt is visibly working on the stage's call (the guest paused, QEMU loading)
    delay: float

    @property
    def name(self) -> str:
        return f"{self.action}@{self.stage}+{self.delay}"


# Every stage of every mutating operation, and inside the long libvirt calls.
EVERY_STAGE = [
    Kill("create", "checking", 0),
    Kill("create", "saving memory and disk", 0),
    Kill("create", "saving memory and disk", INSIDE),
    Kill("create", "verifying", 0),
    Kill("restore", "checking", 0),
    Kill("restore", "safety snapshot", INSIDE),
    Kill("restore", "stopping", 0),
    Kill("restore", "replacing disk and memory", 0),
    Kill("restore", "replacing disk and memory", INSIDE),
    Kill("restore", "starting", 0),
    Kill("delete", "checking", 0),
    Kill("delete", "deleting", 0),
    Kill("delete", "deleting", 0.05),
    Kill("prune", "deleting", 0.05),
]
# What `make test` runs; the rest is for `make reliability`.
QUICK = {"create@saving memory and disk+-1.0", "restore@replacing disk and memory+-1.0"}


def settings(db: Path) -> Settings:
    return Settings(
        libvirt_uri=TEST_URI,
        libvirt_uri_explicit=True,
        data_dir=db.parent,
        database_url=f"sqlite://{db}",
    )


async def prepare(db: Path, guest: Guest, kill: Kill) -> str:
    """Snapshots the operation needs; return the label it works on."""
    async with build_core(settings(db), allow_demo=False) as core:
        have = {s.label for s in await TortoiseCatalogue(SystemClock()).snapshots()}
        for label in ("base", "older"):
            if label not in have:
                await core.snapshots.create_snapshot(guest.name, label, actor=ALICE)
        if kill.action == "create":
            return f"new-{len(have)}"
        if kill.action == "delete":
            if "victim" not in have:
                await core.snapshots.create_snapshot(guest.name, "victim", actor=ALICE)
            return "victim"
        if kill.action == "prune" and "extra" not in have:
            await core.snapshots.create_snapshot(guest.name, "extra", actor=ALICE)
        return "base"


async def run_and_kill(db: Path, guest: Guest, kill: Kill, label: str) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.system.kill_worker",
        f"sqlite://{db}",
        TEST_URI,
        guest.name,
        kill.action,
        label,
        kill.stage,
        str(kill.delay),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(worker.communicate(), 120)
    assert worker.returncode == -9, (kill.name, worker.returncode, out, err.decode()[-2000:])


async def restart_and_check(db: Path, guest: Guest, kill: Kill) -> str:
    # A connection of its own: another test may have restarted the daemon meanwhile.
    conn = open_test_conn()
    heard: list[Operation] = []

    async def tell(operations: Sequence[Operation]) -> None:
        heard.extend(operations)

    async with build_core(settings(db), allow_demo=False) as core:
        await core.watch.on_reconciled(tell)
        assert core.watch.ready.is_set()
        # exactly one final record: the killed operation, reconciled; nothing left running
        assert await OperationRow.filter(status="running").count() == 0, kill.name
        assert await VmLockRow.all().count() == 0, kill.name
        everything = [
            (r.kind, r.status, r.stage, r.requested_by, r.outcome, r.error)
            for r in await OperationRow.all().order_by("started_at")
        ]
        assert len(heard) == 1, (kill.name, everything)
        op = heard[0]
        assert op.status.value == "reconciled"
        assert op.requested_by == "U_KILLED"
        outcome = op.outcome or ""
        notice = messages.reconciled_notice(op)
        assert "<@U_KILLED>" in notice
        # the catalogue agrees with libvirt
        dom = conn.lookupByName(guest.name)
        in_libvirt = {s.getName() for s in dom.listAllSnapshots(0)}
        # the records as stored, read without a sync (which would make them agree)
        rows = await TortoiseCatalogue(SystemClock()).snapshots(dom.UUIDString())
        present = {s.libvirt_name for s in rows if s.status is CatalogueStatus.PRESENT}
        assert present == in_libvirt, (
            kill.name,
            outcome,
            [(s.label, s.libvirt_name, s.status) for s in rows],
            in_libvirt,
        )
        # what the outcome says about the snapshot is what libvirt has
        if kill.action == "create" and op.libvirt_name:
            made = op.libvirt_name in in_libvirt
            assert ("completed and is kept" in outcome) == made, (kill.name, outcome)
        if kill.action in ("delete", "prune"):
            gone = bool(op.libvirt_name) and op.libvirt_name not in in_libvirt
            assert ("was deleted" in outcome) == gone, (kill.name, outcome)
        if kill.action == "restore" and "before the disk was replaced" in outcome:
            # nothing was reverted: the VM is back in the state it was in before the restore
            assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING, (kill.name, outcome)
        # the VM is in the state the outcome names
        state = {
            libvirt.VIR_DOMAIN_RUNNING: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
        }.get(dom.state()[0], "other")
        if "the VM" in outcome:
            assert f"is {state}" in outcome or f"VM is {state}" in outcome, (kill.name, outcome)
        if state != "running":
            # leave the next case a running guest, as an operator would
            dom.resume() if state == "paused" else dom.create()
        # the VM takes a new job: libvirt's job lock was not left held
        await core.snapshots.create_snapshot(
            guest.name, f"after-{uuid.uuid4().hex[:6]}", actor=ALICE
        )
        return outcome


async def kill_at(kills: Sequence[Kill], guests: Guests, tmp_path: Path) -> None:
    # Memory the guest really uses, so saving and loading it take long enough to be cut off.
    guest = guests(memory_mib=384, fill_mib=256)
    db = tmp_path / "catalogue.db"
    outcomes = []
    for kill in kills:
        label = await prepare(db, guest, kill)
        await run_and_kill(db, guest, kill, label)
        outcomes.append(f"{kill.name}: {await restart_and_check(db, guest, kill)}")
    record(
        "snapbot SIGKILLed mid-operation",
        f"SIGKILL at {len(kills)} points of create, restore, delete and prune; restarted",
        f"{len(kills)} kills, {len(kills)} reconciled truthfully, 0 left running or locked",
    )
    print("\n".join(outcomes))


async def test_bot_killed_inside_a_memory_save_and_a_revert(guests: Guests, tmp_path: Path) -> None:
    await kill_at([k for k in EVERY_STAGE if k.name in QUICK], guests, tmp_path)


@pytest.mark.reliability
async def test_bot_killed_at_every_stage(guests: Guests, tmp_path: Path) -> None:
    await kill_at(EVERY_STAGE, guests, tmp_path)
