"""Defects a review of the first release found, each reproduced here first (issue 7)."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from typing import Any

import pytest

from bot import messages
from bot.dispatch import ConfirmDelete, ConfirmUnlock, Dispatcher
from bot.grammar import parse
from core.bootstrap import Core
from core.catalogue.models import OperationRow, SnapshotRow, VmLockRow
from core.catalogue.store import TortoiseCatalogue
from core.domain.operation import OperationKind, OperationStatus, Stage
from core.domain.snapshot import CatalogueStatus, Origin
from core.domain.vm import StateCause, VmState
from core.errors import (
    HypervisorBusy,
    HypervisorUnavailable,
    LabelTaken,
    LibvirtJobRunning,
    OperationFailed,
    SnapshotNotFound,
    SpaceUnknown,
    VmBusy,
)
from core.services import reconcile
from core.services.availability import GatedHypervisor, HypervisorWatch
from core.services.reconcile import Reconciler
from tests.conftest import ALICE, BOB, Services
from tests.fakes.hypervisor import FakeHypervisor

WEB = "11111111-1111-1111-1111-111111111111"
DEAD_OWNER = f"{socket.gethostname()}:999999:dead"


class SkewedClock:
    """A host whose clock runs ``skew`` ahead of the database's."""

    def __init__(self, skew: timedelta) -> None:
        self.skew = skew

    def now(self) -> Any:
        from datetime import UTC, datetime

        return datetime.now(UTC) + self.skew


async def interrupted(
    services: Services,
    kind: OperationKind,
    stage: Stage | None,
    owner: str = DEAD_OWNER,
    label: str | None = None,
    **details: object,
) -> str:
    """Leave an operation as a process that died at ``stage`` would; return its id."""
    vm = await services.hv.get_vm("web-01")
    op = services.runner.new_operation(kind, ALICE, vm_uuid=vm.uuid, vm_name=vm.name, label=label)
    await services.catalogue.begin_operation(op, owner)
    if stage is not None:
        await services.catalogue.set_stage(op.id, stage)
    if details:
        await services.catalogue.update_details(op.id, details)
    return op.id


# -- 2. listings race with operations ------------------------------------------------------


async def test_a_listing_during_a_create_leaves_the_snapshot_to_the_create(
    services: Services,
) -> None:
    """A preview synced mid-create used to insert the new snapshot first (as manual, under a
    made-up label): the create then failed on the unique row although the snapshot existed."""
    seen: list[object] = []

    async def someone_lists() -> None:
        try:
            seen.append(await services.service.restore_preview("web-01", "nightly"))
        except SnapshotNotFound as exc:
            seen.append(exc)
        seen.append(await services.service.list_snapshots("web-01"))

    services.hv.after_create = someone_lists
    created = await services.service.create_snapshot(
        "web-01", "nightly", actor=ALICE, origin=Origin.SCHEDULED
    )
    assert created.snapshot.origin is Origin.SCHEDULED
    [row] = await services.catalogue.snapshots(WEB)
    assert (row.label, row.origin, row.created_by) == ("nightly", Origin.SCHEDULED, "U_ALICE")
    assert [r.status for r in await OperationRow.all()] == ["succeeded"]
    assert isinstance(seen[0], SnapshotNotFound)  # the listing did not see a half-made row
    assert await VmLockRow.all().count() == 0


async def test_an_operation_waits_for_a_listings_sync_instead_of_failing_busy(
    services: Services,
) -> None:
    token = await services.catalogue.lock_for_sync(WEB, "somebody-listing")
    assert token is not None
    create = asyncio.create_task(services.service.create_snapshot("web-01", "a", actor=ALICE))
    await asyncio.sleep(0.2)
    assert not create.done()
    await services.catalogue.unlock_sync(token)
    await create
    assert [s.label for s in await services.catalogue.snapshots(WEB)] == ["a"]


async def test_a_sync_lock_left_by_a_dead_process_does_not_block(services: Services) -> None:
    token = await services.catalogue.lock_for_sync(WEB, "dead")
    assert token is not None
    old = (await services.catalogue.database_now()) - timedelta(minutes=5)
    await VmLockRow.filter(operation_id=token).update(heartbeat_at=old)
    await services.service.create_snapshot("web-01", "a", actor=ALICE)


# -- 3. crash recovery decides from evidence ---------------------------------------------


async def test_a_restore_interrupted_while_checking_leaves_a_paused_vm_paused(
    services: Services,
) -> None:
    """Someone had paused the VM on purpose; the restore died before touching it. The old
    recovery resumed it and reported "the revert had completed"."""
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    services.hv._set_state(WEB, VmState.PAUSED)
    await interrupted(services, OperationKind.RESTORE, Stage.CHECKING, target_has_memory=True)
    [op] = await services.reconciler.recover_interrupted()
    outcome = op.outcome or ""
    assert "before the disk was replaced" in outcome
    assert "completed" not in outcome
    assert services.hv.vms[WEB].vm.state is VmState.PAUSED
    assert ("resume", WEB) not in services.hv.calls


async def test_a_snapshot_cut_off_mid_memory_save_is_resumed(services: Services) -> None:
    services.hv._set_state(WEB, VmState.PAUSED)  # QEMU pauses the guest while saving memory
    await interrupted(
        services,
        OperationKind.SNAPSHOT,
        Stage.SAVING_MEMORY_AND_DISK,
        label="nightly",
        libvirt_name="sb-never-made",
        pre_state="running",
    )
    [op] = await services.reconciler.recover_interrupted()
    assert "no snapshot was made" in (op.outcome or "")
    assert "a memory save had paused it" in (op.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.RUNNING


async def test_a_snapshot_interrupted_before_the_call_touches_nothing(
    services: Services,
) -> None:
    services.hv._set_state(WEB, VmState.PAUSED)
    await interrupted(services, OperationKind.SNAPSHOT, Stage.CHECKING, pre_state="running")
    [op] = await services.reconciler.recover_interrupted()
    assert "before the snapshot was started" in (op.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.PAUSED


async def test_a_scheduled_snapshot_that_completed_keeps_its_origin_and_label(
    services: Services,
) -> None:
    made = await services.service.create_snapshot("web-01", "tmp", actor=ALICE)
    name = made.snapshot.libvirt_name
    await SnapshotRow.filter(libvirt_name=name).delete()  # the process died before recording
    await interrupted(
        services,
        OperationKind.SNAPSHOT,
        Stage.VERIFYING,
        label="nightly-1",
        libvirt_name=name,
        pre_state="running",
        origin="scheduled",
    )
    [op] = await services.reconciler.recover_interrupted()
    assert "completed and is kept" in (op.outcome or "")
    [row] = await services.catalogue.snapshots(WEB)
    assert (row.label, row.origin) == ("nightly-1", Origin.SCHEDULED)


async def revert_issued(services: Services, current_before: str | None) -> str:
    base = await services.service.create_snapshot("web-01", "base", actor=ALICE)
    other = await services.service.create_snapshot("web-01", "other", actor=ALICE)
    await interrupted(
        services,
        OperationKind.RESTORE,
        Stage.REPLACING_DISK_AND_MEMORY,
        label="base",
        libvirt_name=base.snapshot.libvirt_name,
        pre_state="running",
        target_has_memory=True,
        revert_issued=True,
        current_before=current_before or other.snapshot.libvirt_name,
    )
    return base.snapshot.libvirt_name


async def test_a_revert_that_landed_is_known_by_the_current_snapshot_and_resumed(
    services: Services,
) -> None:
    target = await revert_issued(services, None)
    vm = await services.hv.get_vm("web-01")
    await services.hv.revert_snapshot(vm, target, paused=True)  # libvirtd finished it
    [op] = await services.reconciler.recover_interrupted()
    assert "had completed" in (op.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.RUNNING


async def test_a_revert_that_did_not_land_is_said_and_nothing_is_resumed(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "REVERT_SETTLE_SECONDS", 0.0)
    await revert_issued(services, None)
    services.hv._set_state(WEB, VmState.PAUSED)  # paused, but not by a landed revert
    [op] = await services.reconciler.recover_interrupted()
    assert "did not complete" in (op.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.PAUSED


async def test_when_the_evidence_cannot_tell_the_outcome_is_unknown(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "REVERT_SETTLE_SECONDS", 0.0)
    base = await services.service.create_snapshot("web-01", "base", actor=ALICE)
    name = base.snapshot.libvirt_name
    await interrupted(
        services,
        OperationKind.RESTORE,
        Stage.REPLACING_DISK_AND_MEMORY,
        label="base",
        libvirt_name=name,
        pre_state="running",
        target_has_memory=True,
        revert_issued=True,
        current_before=name,  # the target was current already: "current" proves nothing
    )
    services.hv._set_state(WEB, VmState.PAUSED)
    [op] = await services.reconciler.recover_interrupted()
    outcome = op.outcome or ""
    assert "unknown whether the revert" in outcome
    assert "virsh snapshot-current web-01" in outcome
    assert services.hv.vms[WEB].vm.state is VmState.PAUSED


# -- 4. locks end while snapbot runs -------------------------------------------------------


async def test_a_live_lock_is_not_taken_over_because_this_hosts_clock_runs_ahead(
    services: Services,
) -> None:
    """Heartbeats and staleness are the database's time: a replica whose clock runs two
    minutes ahead used to take over another replica's live operation."""
    await interrupted(services, OperationKind.RESTORE, Stage.STOPPING, owner="otherhost:1:live")
    skewed = Reconciler(
        services.hv, services.catalogue, SkewedClock(timedelta(minutes=2)), services.owner
    )
    assert await skewed.recover_interrupted() == []
    assert await VmLockRow.all().count() == 1


async def test_a_dead_replicas_lock_is_taken_over_while_running_and_its_requester_told(
    services: Services,
) -> None:
    op_id = await interrupted(
        services, OperationKind.SNAPSHOT, Stage.CHECKING, owner="otherhost:1:gone"
    )
    stale = (await services.catalogue.database_now()) - timedelta(minutes=5)
    await VmLockRow.filter(operation_id=op_id).update(heartbeat_at=stale)
    watch = HypervisorWatch(services.hv, services.reconciler, takeover_interval=0.05)
    heard: list[str] = []

    async def tell(ops: Any) -> None:
        heard.extend(o.id for o in ops)

    await watch.on_reconciled(tell)
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert heard == [op_id]
    assert await VmLockRow.all().count() == 0
    await services.service.create_snapshot("web-01", "after", actor=BOB)


async def test_a_process_whose_lock_was_taken_over_cannot_overwrite_the_outcome(
    services: Services,
) -> None:
    op_id = await interrupted(services, OperationKind.SNAPSHOT, Stage.CHECKING)
    [done] = await services.reconciler.recover_interrupted()
    assert done.status is OperationStatus.RECONCILED
    late = await services.catalogue.finish_operation(op_id, OperationStatus.SUCCEEDED)
    assert late.status is OperationStatus.RECONCILED


async def test_two_replicas_never_reconcile_the_same_operation(services: Services) -> None:
    await interrupted(services, OperationKind.SNAPSHOT, Stage.CHECKING)
    other = Reconciler(services.hv, services.catalogue, SkewedClock(timedelta()), "replica-2")
    first, second = await asyncio.gather(
        services.reconciler.recover_interrupted(), other.recover_interrupted()
    )
    assert len(first) + len(second) == 1


async def test_unlock_previews_the_holder_refuses_while_libvirt_works_and_audits(
    core: Core, services: Services
) -> None:
    op_id = await interrupted(
        services,
        OperationKind.RESTORE,
        Stage.STOPPING,
        owner="otherhost:1:stuck",
        pre_state="running",
    )
    services.hv._set_state(WEB, VmState.SHUT_OFF)
    dispatcher = Dispatcher(core, None)
    outcome = await dispatcher.handle(parse("snapshot", "unlock web-01"), BOB)
    assert isinstance(outcome, ConfirmUnlock)
    text = messages.unlock_preview(outcome.preview)
    assert "locked by restore of U_ALICE" in text
    assert "otherhost:1:stuck" in text
    services.hv.jobs.add(WEB)
    with pytest.raises(LibvirtJobRunning):
        await dispatcher.confirm(outcome.confirmation.id, BOB)
    assert await VmLockRow.all().count() == 1
    services.hv.jobs.clear()
    again = await dispatcher.handle(parse("snapshot", "unlock web-01"), BOB)
    assert isinstance(again, ConfirmUnlock)
    said = await dispatcher.confirm(again.confirmation.id, BOB)
    assert "Unlocked web-01" in said
    assert await VmLockRow.all().count() == 0
    row = await OperationRow.get(id=op_id)
    assert row.status == "reconciled"
    assert "before the disk was replaced" in (row.outcome or "")
    assert "unlocked by U_BOB" in (row.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.RUNNING  # stopped for the restore: started
    kinds = {(r.kind, r.status) for r in await OperationRow.all()}
    assert ("unlock", "rejected") in kinds
    assert ("unlock", "succeeded") in kinds


async def test_unlock_of_a_free_vm_says_so(core: Core) -> None:
    with pytest.raises(Exception, match="not locked"):
        await Dispatcher(core, None).handle(parse("snapshot", "unlock web-01"), BOB)


# -- 1. the configured hypervisor is never swapped ---------------------------------------


class Switchable:
    """The fake hypervisor behind a switch: down, every call fails like a refused connection."""

    def __init__(self, inner: FakeHypervisor) -> None:
        self.inner = inner
        self.down = True

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name == "uri":
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise HypervisorUnavailable("Failed to connect socket: Connection refused")
            return await attr(*args, **kwargs)

        return call

    @property
    def uri(self) -> str:
        return "qemu:///system"


async def test_an_unreachable_hypervisor_is_said_and_the_catalogue_left_alone_until_it_answers(
    services: Services,
) -> None:
    made = await services.service.create_snapshot("web-01", "keep-me", actor=ALICE)
    op_id = await interrupted(services, OperationKind.SNAPSHOT, Stage.CHECKING, label="in-flight")
    hv = Switchable(services.hv)
    reconciler = Reconciler(hv, services.catalogue, services.catalogue._clock, "me")  # type: ignore[arg-type]
    watch = HypervisorWatch(hv, reconciler)  # type: ignore[arg-type]
    gated = GatedHypervisor(hv, watch)  # type: ignore[arg-type]
    assert not await watch.connect_once()
    with pytest.raises(HypervisorUnavailable, match="unreachable"):
        await gated.list_vms()
    # nothing was judged against a hypervisor that did not answer
    assert (await OperationRow.get(id=op_id)).status == "running"
    [row] = await services.catalogue.snapshots(WEB)
    assert row.status is CatalogueStatus.PRESENT
    assert row.libvirt_name == made.snapshot.libvirt_name
    hv.down = False
    assert await watch.connect_once()
    assert (await OperationRow.get(id=op_id)).status == "reconciled"
    assert [v.name for v in await gated.list_vms()] == ["db-01", "web-01", "web-02"]


async def test_a_sync_never_judges_snapshots_of_another_hypervisor(services: Services) -> None:
    await services.service.create_snapshot("web-01", "mine", actor=ALICE)
    # a record of a VM on another host (a catalogue shared by two hypervisors)
    await SnapshotRow.create(
        vm_uuid="99999999-9999-9999-9999-999999999999",
        vm_name="elsewhere",
        libvirt_name="sb-elsewhere",
        label="theirs",
        description="",
        kind="full",
        captured_state="running",
        has_memory=True,
        created_at=(await services.catalogue.database_now()),
        created_by="U",
        origin="manual",
        status="present",
        host_uuid="another-host-uuid",
    )
    await services.reconciler.sync_all()
    theirs = await SnapshotRow.get(libvirt_name="sb-elsewhere")
    assert theirs.status == "present"
    mine = await SnapshotRow.get(label="mine")
    assert mine.host_uuid == services.hv.host


# -- 8. rename -------------------------------------------------------------------------------


async def test_rename_rewrites_libvirts_description_so_a_rebuilt_catalogue_reads_it(
    services: Services, catalogue: TortoiseCatalogue
) -> None:
    made = await services.service.create_snapshot(
        "web-01", "before", actor=ALICE, description="pg 15"
    )
    await services.service.rename_snapshot("web-01", "before", "after-upgrade", actor=ALICE)
    hs = services.hv.vms[WEB].snapshots[made.snapshot.libvirt_name]
    assert hs.description.startswith("snapbot label: after-upgrade")
    assert "pg 15" in hs.description
    await SnapshotRow.all().delete()  # the catalogue is lost and rebuilt from libvirt
    await services.reconciler.sync_all()
    [row] = await services.catalogue.snapshots(WEB)
    assert row.label == "after-upgrade"


# -- 9. space that cannot be known ---------------------------------------------------------


async def test_unknown_space_is_said_and_the_user_can_go_ahead_explicitly(
    core: Core, services: Services
) -> None:
    services.hv.space_unknown = "a network disk's free space is not visible to libvirt"
    dispatcher = Dispatcher(core, None)
    with pytest.raises(SpaceUnknown) as info:
        await dispatcher.handle(parse("snapshot", "web-01 risky"), ALICE)
    text = messages.error_text(info.value)
    assert "cannot be known" in text
    assert "--no-space-check" in text
    assert services.hv.calls == []
    await dispatcher.handle(parse("snapshot", "web-01 risky --no-space-check"), ALICE)
    assert [s.label for s in await services.catalogue.snapshots(WEB)] == ["risky"]


# -- 10. missing snapshots can be cleared ---------------------------------------------------


async def test_a_snapshot_deleted_with_virsh_can_be_cleared_and_its_name_reused(
    core: Core, services: Services
) -> None:
    made = await services.service.create_snapshot("web-01", "gone", actor=ALICE)
    del services.hv.vms[WEB].snapshots[made.snapshot.libvirt_name]  # virsh snapshot-delete
    await services.service.list_snapshots("web-01")
    with pytest.raises(LabelTaken) as taken:
        await services.service.create_snapshot("web-01", "gone", actor=ALICE)
    assert "/snapshot delete web-01 gone" in messages.error_text(taken.value)
    dispatcher = Dispatcher(core, None)
    outcome = await dispatcher.handle(parse("snapshot", "delete web-01 gone"), ALICE)
    assert isinstance(outcome, ConfirmDelete)
    assert "Clear the record" in messages.delete_prompt(outcome.snapshot)
    said = await dispatcher.confirm(outcome.confirmation.id, ALICE)
    assert "gone" in said
    assert await services.catalogue.snapshots(WEB) == []
    ops = await services.catalogue.operations(WEB)
    assert ops[0].kind is OperationKind.DELETE
    assert ops[0].status is OperationStatus.SUCCEEDED
    await services.service.create_snapshot("web-01", "gone", actor=ALICE)


async def test_busy_stays_busy_for_a_real_operation(services: Services) -> None:
    await interrupted(services, OperationKind.RESTORE, Stage.STOPPING, owner="otherhost:1:live")
    with pytest.raises(VmBusy):
        await services.service.create_snapshot("web-01", "x", actor=BOB)


async def test_a_vm_someone_paused_during_a_cut_off_save_stays_paused(services: Services) -> None:
    services.hv._set_state(WEB, VmState.PAUSED, StateCause.BY_USER)
    await interrupted(
        services,
        OperationKind.SNAPSHOT,
        Stage.SAVING_MEMORY_AND_DISK,
        libvirt_name="sb-never-made",
        pre_state="running",
    )
    [op] = await services.reconciler.recover_interrupted()
    assert "someone paused it" in (op.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.PAUSED


async def test_libvirts_state_reason_proves_a_revert_to_the_already_current_snapshot(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target was current before (no safety snapshot), so "current" proves nothing; the
    VM paused *from a snapshot* after snapbot had stopped it does."""
    monkeypatch.setattr(reconcile, "REVERT_SETTLE_SECONDS", 0.0)
    base = await services.service.create_snapshot("web-01", "base", actor=ALICE)
    name = base.snapshot.libvirt_name
    await interrupted(
        services,
        OperationKind.RESTORE,
        Stage.REPLACING_DISK_AND_MEMORY,
        libvirt_name=name,
        pre_state="running",
        target_has_memory=True,
        revert_issued=True,
        current_before=name,
    )
    services.hv._set_state(WEB, VmState.PAUSED, StateCause.FROM_SNAPSHOT)
    [op] = await services.reconciler.recover_interrupted()
    assert "had completed" in (op.outcome or "")
    assert services.hv.vms[WEB].vm.state is VmState.RUNNING


async def test_records_of_a_listed_vm_are_this_hosts_whatever_they_said_before(
    services: Services,
) -> None:
    """Rows from before snapbot kept the host (NULL), or under a host id libvirt changed when
    its daemon restarted on a host without an SMBIOS UUID: the VM is listed here, so here."""
    await services.service.create_snapshot("web-01", "old", actor=ALICE)
    await services.service.create_snapshot("web-01", "older", actor=ALICE)
    await SnapshotRow.filter(label="old").update(host_uuid=None, hypervisor_uri=None)
    await SnapshotRow.filter(label="older").update(host_uuid="a-previous-random-host-id")
    await services.service.list_snapshots("web-01")
    rows = await SnapshotRow.filter(vm_uuid=WEB)
    assert {r.host_uuid for r in rows} == {services.hv.host}
    assert {r.hypervisor_uri for r in rows} == {"fake:///"}


# -- what the real-guest fault suite found ---------------------------------------------------


async def test_a_snapshot_whose_answer_was_lost_is_recorded_as_made(services: Services) -> None:
    """libvirtd restarted between making the snapshot and answering: libvirt has it, so it was
    made (the first version recorded it FAILED)."""
    services.hv.lose_answer.add("create_snapshot")
    created = await services.service.create_snapshot("web-01", "nightly", actor=ALICE)
    assert created.snapshot.libvirt_name in services.hv.vms[WEB].snapshots
    [op] = await services.catalogue.operations(WEB)
    assert op.status is OperationStatus.SUCCEEDED


async def test_a_snapshot_lost_with_the_connection_resumes_the_vm_and_says_so(
    services: Services,
) -> None:
    services.hv.fail["create_snapshot"] = HypervisorUnavailable("Cannot recv data")
    services.hv.state_after_failure["create_snapshot"] = VmState.PAUSED  # mid memory save
    with pytest.raises(OperationFailed) as info:
        await services.service.create_snapshot("web-01", "nightly", actor=ALICE)
    assert "no such snapshot" in info.value.detail
    assert info.value.vm_state == "running"
    assert services.hv.vms[WEB].vm.state is VmState.RUNNING


async def test_a_revert_whose_answer_was_lost_is_a_restore_that_completed(
    services: Services,
) -> None:
    await services.service.create_snapshot("web-01", "base", actor=ALICE)
    services.hv.lose_answer.add("revert_snapshot")
    restored = await services.service.restore("web-01", "base", actor=ALICE)
    assert restored.vm_state is VmState.RUNNING
    ops = await services.catalogue.operations(WEB)
    assert ops[0].kind is OperationKind.RESTORE
    assert ops[0].status is OperationStatus.SUCCEEDED


async def test_another_clients_libvirt_job_is_busy_at_once(services: Services) -> None:
    services.hv.jobs.add(WEB)  # virsh snapshot-create-as running on web-01
    with pytest.raises(HypervisorBusy):
        await services.service.create_snapshot("web-01", "x", actor=ALICE)
    assert services.hv.calls == []
    await services.service.create_snapshot("web-02", "y", actor=ALICE)  # others proceed


# -- typed confirmation requests (issue 8) ----------------------------------------------------


def test_every_request_survives_its_stored_form_and_a_damaged_one_is_refused() -> None:
    from core.domain.confirmation import (
        ConfirmationKind,
        DeleteRequest,
        PruneRequest,
        RestoreRequest,
        UnlockRequest,
        kind_of,
        request_from_json,
        request_to_json,
    )
    from core.errors import InvalidInput

    requests = [
        RestoreRequest("web-01", "before", "sb-1", safety_snapshot=False),
        DeleteRequest("web-01", "old", "sb-2"),
        PruneRequest("all", (("daily", 7),), (("uuid-1", ("sb-3", "sb-4")),), True, 2, None),
        PruneRequest(None, (("last", 1),), ()),
        UnlockRequest("web-01", "op-1"),
    ]
    for request in requests:
        kind = kind_of(request)
        assert request_from_json(kind, request_to_json(request)) == request
    # release 0.1 stored a restore as these keys: still read
    old = {"vm": "web-01", "label": "a", "libvirt_name": "sb-9", "safety_snapshot": True}
    assert request_from_json(ConfirmationKind.RESTORE, old) == RestoreRequest(
        "web-01", "a", "sb-9", True
    )
    with pytest.raises(InvalidInput, match="damaged"):
        request_from_json(ConfirmationKind.PRUNE, {"vm": "web-01", "keep": [], "pinned": {}})
    with pytest.raises(InvalidInput, match="damaged"):
        request_from_json(ConfirmationKind.DELETE, {"vm": "web-01", "label": 3})


async def test_a_half_made_snapshot_left_in_the_image_is_removed_and_said(
    services: Services,
) -> None:
    """libvirtd died while QEMU saved the memory: QEMU finished the snapshot in the qcow2,
    libvirt never recorded it. snapbot removes it by the name it chose, and says so."""
    services.hv.fail["create_snapshot"] = HypervisorUnavailable("Cannot recv data")
    original = services.hv.create_snapshot

    async def create_leaving_an_orphan(vm: Any, name: str, description: str) -> Any:
        services.hv.orphans[(vm.uuid, name)] = True
        return await original(vm, name, description)

    services.hv.create_snapshot = create_leaving_an_orphan  # type: ignore[method-assign]
    with pytest.raises(OperationFailed) as info:
        await services.service.create_snapshot("web-01", "nightly", actor=ALICE)
    assert "was removed" in info.value.detail
    assert services.hv.orphans == {}
