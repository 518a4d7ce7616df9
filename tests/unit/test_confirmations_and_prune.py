"""Confirmations run once; prune previews, then deletes exactly what it showed and still means."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot import messages
from bot.dispatch import ConfirmDelete, ConfirmPrune, ConfirmRestore, Dispatcher, Reply
from bot.grammar import DeleteSnapshot, Prune, Restore, parse
from core.bootstrap import Core
from core.catalogue.models import ConfirmationRow, SnapshotRow
from core.domain.operation import OperationKind, OperationStatus
from core.domain.snapshot import Origin
from core.errors import ConfirmationSpent, InvalidInput, SnapshotNotFound
from tests.conftest import ALICE, BOB, Services

DAY = 86_400


async def take_dailies(services: Services, vm: str, days: int) -> None:
    """One scheduled snapshot a day (the fake hypervisor's clock moves a day each time)."""
    for n in range(days):
        services.hv._clock += DAY - 60
        await services.service.create_snapshot(
            vm, f"daily-{n:03d}", actor=ALICE, origin=Origin.SCHEDULED
        )


async def test_a_restore_confirmation_runs_once_even_when_submitted_twice_at_once(
    core: Core, services: Services
) -> None:
    await core.snapshots.create_snapshot("web-01", "before", actor=ALICE)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(Restore("web-01", "before", True), ALICE)
    assert isinstance(request, ConfirmRestore)
    results = await asyncio.gather(
        dispatcher.confirm(request.confirmation.id, ALICE),
        dispatcher.confirm(request.confirmation.id, ALICE),
        return_exceptions=True,
    )
    spent = [r for r in results if isinstance(r, ConfirmationSpent)]
    done = [r for r in results if isinstance(r, str)]
    assert len(done) == 1
    assert len(spent) == 1
    assert spent[0].reason == "used"
    assert "was already confirmed by U_ALICE" in messages.error_text(spent[0])
    restores = [
        op
        for op in await services.catalogue.operations(limit=100)
        if op.kind is OperationKind.RESTORE and op.status is OperationStatus.SUCCEEDED
    ]
    assert len(restores) == 1


async def test_someone_elses_or_an_expired_or_cancelled_confirmation_runs_nothing(
    core: Core, services: Services
) -> None:
    await core.snapshots.create_snapshot("web-01", "old", actor=ALICE)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(DeleteSnapshot("web-01", "old"), ALICE)
    assert isinstance(request, ConfirmDelete)
    with pytest.raises(ConfirmationSpent) as info:
        await dispatcher.confirm(request.confirmation.id, BOB)
    assert info.value.reason == "not_yours"
    assert "belongs to U_ALICE" in messages.error_text(info.value)

    await ConfirmationRow.filter(id=request.confirmation.id).update(
        expires_at=request.confirmation.created_at - timedelta(seconds=1)
    )
    with pytest.raises(ConfirmationSpent) as info:
        await dispatcher.confirm(request.confirmation.id, ALICE)
    assert info.value.reason == "expired"

    again = await dispatcher.handle(DeleteSnapshot("web-01", "old"), ALICE)
    assert isinstance(again, ConfirmDelete)
    assert messages.cancelled("delete", "web-01") == await dispatcher.cancel(
        again.confirmation.id, ALICE
    )
    with pytest.raises(ConfirmationSpent):
        await dispatcher.confirm(again.confirmation.id, ALICE)
    assert [s.label for s in await services.catalogue.snapshots()] == ["old"]


async def test_delete_confirmation_pins_the_snapshot_that_was_shown(
    core: Core, services: Services
) -> None:
    """Renamed between preview and confirm: the shown snapshot is deleted, not a namesake."""
    await core.snapshots.create_snapshot("web-01", "a", actor=ALICE)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(DeleteSnapshot("web-01", "a"), ALICE)
    assert isinstance(request, ConfirmDelete)
    await core.snapshots.rename_snapshot("web-01", "a", "a-renamed", actor=ALICE)
    await core.snapshots.create_snapshot("web-01", "a", actor=ALICE)
    text = await dispatcher.confirm(request.confirmation.id, ALICE)
    assert "Deleted `a-renamed`" in text
    assert [s.label for s in await services.catalogue.snapshots()] == ["a"]


async def test_prune_preview_lists_every_decision_and_deletes_nothing_until_confirmed(
    core: Core, services: Services
) -> None:
    await take_dailies(services, "web-01", 10)
    await core.snapshots.create_snapshot("web-01", "manual-one", actor=ALICE)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(parse("prune", "web-01 --keep-last 2 --keep-daily 3"), ALICE)
    assert isinstance(request, ConfirmPrune)
    assert request.confirmation is not None
    preview = messages.prune_preview(request.preview, dry_run=False)
    assert "last=2, daily=3" in preview
    assert "manual-one" in preview
    assert "manual" in preview
    (plan,) = request.preview.plans
    reasons = {d.snapshot.label: d.reason for d in plan.decisions}
    assert reasons["daily-009"] == "last #1"
    assert reasons["daily-008"] == "last #2"
    assert reasons["daily-007"] == "daily #1"
    assert reasons["manual-one"] == "manual"
    assert len(plan.to_delete) == 10 - 5  # last 2 + daily 3 kept
    assert len(await services.catalogue.snapshots()) == 11, "nothing deleted before confirm"

    # a hold placed after the preview protects its snapshot from the confirmed prune
    victim = plan.to_delete[0]
    await SnapshotRow.filter(libvirt_name=victim.libvirt_name).update(held=True)
    text = await dispatcher.confirm(request.confirmation.id, ALICE)
    left = {s.label for s in await services.catalogue.snapshots()}
    assert victim.label in left
    assert "kept 1 that changed since the preview" in text
    assert len(left) == 11 - (len(plan.to_delete) - 1)


async def test_prune_dry_run_and_empty_policy(core: Core, services: Services) -> None:
    await take_dailies(services, "web-01", 4)
    dispatcher = Dispatcher(core, access=None)
    dry = await dispatcher.handle(Prune("web-01", (("last", 1),), True), ALICE)
    assert isinstance(dry, ConfirmPrune)
    assert dry.confirmation is None
    assert "dry run, nothing will be deleted" in messages.prune_preview(dry.preview, dry_run=True)
    assert len(await services.catalogue.snapshots()) == 4
    with pytest.raises(InvalidInput) as info:
        await dispatcher.handle(Prune("web-01", (), False), ALICE)
    assert "--keep-daily 7" in str(info.value)


async def test_restore_without_a_snapshot_offers_the_vms_snapshots(core: Core) -> None:
    await core.snapshots.create_snapshot("web-01", "one", actor=ALICE)
    await core.snapshots.create_snapshot("web-01", "two", actor=ALICE)
    dispatcher = Dispatcher(core, access=None)
    outcome = await dispatcher.handle(Restore("web-01", None, True), ALICE)
    assert not isinstance(outcome, Reply)
    text = messages.pick_snapshot(outcome.vm)  # type: ignore[union-attr]
    assert text.index("two") < text.index("one"), "newest first"
    assert "Then: /restore web-01 <name>" in text


async def test_a_missing_snapshot_says_who_deleted_it(core: Core, services: Services) -> None:
    await take_dailies(services, "web-01", 3)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(Prune("web-01", (("last", 1),), False), ALICE)
    assert isinstance(request, ConfirmPrune)
    assert request.confirmation is not None
    await dispatcher.confirm(request.confirmation.id, ALICE)
    with pytest.raises(SnapshotNotFound) as info:
        await dispatcher.handle(Restore("web-01", "daily-000", True), BOB)
    text = messages.error_text(info.value)
    assert "It was deleted by U_ALICE at" in text
    assert "`daily-002`" in text


async def test_a_confirmed_prune_that_deleted_nothing_still_has_its_final_record(
    core: Core, services: Services
) -> None:
    """Every accepted request ends in exactly one final record: a confirmed prune whose
    snapshots were all deleted by someone else meanwhile deletes nothing, and says so."""
    await take_dailies(services, "web-01", 4)
    dispatcher = Dispatcher(core, access=None)
    request = await dispatcher.handle(parse("prune", "web-01 --keep-last 2"), ALICE)
    assert isinstance(request, ConfirmPrune)
    assert request.confirmation is not None
    for snap in request.preview.plans[0].to_delete:  # gone before the confirm
        await core.snapshots.delete_snapshot("web-01", snap.label, actor=ALICE)
    await dispatcher.confirm(request.confirmation.id, ALICE)
    prunes = [o for o in await services.catalogue.operations() if o.kind.value == "prune"]
    assert len(prunes) == 1
    assert prunes[0].status.value == "succeeded"
    assert prunes[0].outcome is not None
    assert "deleted 0" in prunes[0].outcome
