"""The console front end over the fake hypervisor: schedules, holds and prune with a typed
confirmation, as an operator types them."""

from __future__ import annotations

import io

from bot.console import Console, ConsoleReporter
from core.bootstrap import Core
from scheduler.service import build_scheduler
from tests.conftest import Services


async def run(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    scheduler = build_scheduler(core, ConsoleReporter(out))
    status = await Console(core, io.StringIO(script), out, scheduler).run()
    return status, out.getvalue()


async def test_schedule_add_run_and_list_from_the_console(core: Core, services: Services) -> None:
    status, out = await run(
        core,
        "/snapshot schedule add nightly web-* daily 02:00 --keep-last 1\n"
        "/snapshot schedule run nightly\n"
        "/snapshot schedule run nightly\n"
        "/snapshot schedule list\n",
    )
    assert status == 0, out
    assert "Schedule added" in out
    assert out.count("✅ *Schedule nightly* run for") >= 2, "printed by the reporter and replied"
    # the second run in the same second finds its slot taken, or runs a new one: never both
    assert ("already has a run for this moment" in out) != (out.count("✅ *Schedule") == 4)
    assert "web-01: `nightly-" in out
    assert "#1 nightly: web-*" in out
    labels = {s.label for s in await services.catalogue.snapshots()}
    assert any(label.startswith("nightly-") for label in labels)


async def test_prune_in_the_console_needs_the_vm_name_typed(core: Core, services: Services) -> None:
    from core.domain.snapshot import Origin
    from tests.conftest import ALICE

    for n in range(3):
        services.hv._clock += 86_400
        await services.service.create_snapshot(
            "web-01", f"n-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )
    status, out = await run(core, "/prune web-01 --keep-last 1\nweb-02\n")
    assert status == 0
    assert "Type web-01 to confirm the deletions:" in out
    assert "Prune cancelled: you typed 'web-02', not 'web-01'" in out
    assert len(await services.catalogue.snapshots()) == 3
    status, out = await run(core, "/prune web-01 --keep-last 1\nweb-01\n")
    assert "Prune finished" in out
    assert "deleted 2" in out
    assert [s.label for s in await services.catalogue.snapshots()] == ["n-2"]


async def test_holds_from_the_console(core: Core, services: Services) -> None:
    status, out = await run(
        core,
        "/snapshot web-01 pre-change --hold\n"
        "/snapshot hold web-01 pre-change --until 2099-01-01\n"
        "/snapshot hold web-01 pre-change --until yesterday\n"
        "/snapshot release web-01 pre-change\n",
    )
    assert status == 1, "the bad date fails"
    assert "is now held until 2099-01-01 23:59 UTC" in out
    assert "'yesterday' is not a date" in out
    assert "is no longer held" in out
    (snap,) = await services.catalogue.snapshots()
    assert snap.hold is None


async def test_a_slack_channel_mention_is_stored_as_its_id(core: Core) -> None:
    status, out = await run(
        core, "/snapshot schedule add weekly all weekly sun 03:00 --channel <#C0REPORTS|ops>\n"
    )
    assert status == 0, out
    (schedule,) = await core.schedules.list()
    assert schedule.channel == "C0REPORTS"
