"""The ``DrillStore`` contract over every catalogue backend (SQLite, PostgreSQL when configured,
the in-memory catalogue): the same fixture as the rest of the catalogue contract."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Protocol

from core.domain.drills import Drill, DrillResult, DrillSource
from core.ports import DrillStore
from tests.contract import test_catalogue_backends as backends
from tests.contract.test_catalogue_backends import T0, VM_A, VM_B

# The catalogue contract's own fixtures: every backend it runs over.
catalogue = backends.catalogue
clock = backends.clock
database_url = backends.database_url

STALE = timedelta(hours=6)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Store(DrillStore, Protocol):
    pass


def drill(drill_id: str, vm_uuid: str = VM_A, *, minutes: int = 0) -> Drill:
    return Drill(
        id=drill_id,
        vm_uuid=vm_uuid,
        vm_name="web-1" if vm_uuid == VM_A else "db-1",
        label="nightly-20260301",
        libvirt_name="pt-20260301t020000z-1a2b3c4d",
        point_id="20260301T020000Z-1a2b3c4d",
        source=DrillSource.STORE,
        point_created_at=T0 - timedelta(hours=7, minutes=30),
        started_at=T0 + timedelta(minutes=minutes),
        requested_by="U1",
        throwaway_name=f"snapbot-drill-web-1-{drill_id}",
    )


def ended(d: Drill, result: DrillResult, **changes: object) -> Drill:
    return replace(
        d,
        result=result,
        finished_at=d.started_at + timedelta(seconds=42),
        **changes,  # type: ignore[arg-type]
    )


async def test_a_drill_round_trips_and_its_screenshot_is_read_apart(catalogue: Store) -> None:
    first = drill("a1")
    assert await catalogue.begin_drill(first, stale_after=STALE)
    (running,) = await catalogue.drills(VM_A)
    assert running == first
    done = ended(first, DrillResult.PASSED, ready_seconds=12.5, screenshot=PNG)
    await catalogue.finish_drill(done)
    (listed,) = await catalogue.drills()
    assert listed.result is DrillResult.PASSED
    assert listed.ready_seconds == 12.5
    assert listed.finished_at == first.started_at + timedelta(seconds=42)
    assert listed.point_created_at == first.point_created_at
    assert listed.screenshot is None
    assert await catalogue.drill_screenshot("a1") == PNG
    assert await catalogue.drill_screenshot("nope") is None


async def test_a_second_running_drill_of_a_vm_is_refused_until_the_first_is_stale(
    catalogue: Store,
) -> None:
    assert await catalogue.begin_drill(drill("a1"), stale_after=STALE)
    assert not await catalogue.begin_drill(drill("a2", minutes=5), stale_after=STALE)
    assert await catalogue.begin_drill(drill("b1", VM_B, minutes=5), stale_after=STALE)
    # A drill whose process died long ago no longer blocks the VM.
    assert await catalogue.begin_drill(drill("a3", minutes=7 * 60), stale_after=STALE)
    assert [d.id for d in await catalogue.drills(VM_A)] == ["a3", "a1"]


async def test_last_passed_drill_per_vm_and_abandoned_running_drills(catalogue: Store) -> None:
    for d, result in (
        (drill("a1"), DrillResult.PASSED),
        (drill("a2", minutes=10), DrillResult.FAILED),
        (drill("b1", VM_B, minutes=20), DrillResult.PASSED),
        (drill("b2", VM_B, minutes=30), DrillResult.PASSED),
    ):
        assert await catalogue.begin_drill(d, stale_after=timedelta(seconds=1))
        await catalogue.finish_drill(
            ended(d, result, error="boom" if result.value == "failed" else None)
        )
    assert await catalogue.begin_drill(drill("a3", minutes=40), stale_after=STALE)
    last = await catalogue.last_passed_drills()
    assert {k: v.id for k, v in last.items()} == {VM_A: "a1", VM_B: "b2"}
    assert await catalogue.abandon_drills(T0 + timedelta(minutes=35), "gone") == 0
    assert await catalogue.abandon_drills(T0 + timedelta(minutes=41), "snapbot stopped") == 1
    (latest, *_) = await catalogue.drills(VM_A)
    assert latest.id == "a3"
    assert latest.result is DrillResult.FAILED
    assert latest.error == "snapbot stopped"
    failed = [d for d in await catalogue.drills(VM_A) if d.id == "a2"]
    assert failed[0].error == "boom"
