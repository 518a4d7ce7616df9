"""What each command does, once, for every front end.

``Dispatcher.handle`` runs a parsed command. Commands that destroy something (restore, delete,
prune) do not run there: they return a request carrying a stored confirmation, the front end
shows it (a console prompt, a Slack modal or buttons), and ``Dispatcher.confirm`` runs it when
the same person confirms, at most once. Access is checked on the request and again on the
confirmation (roles can change in between).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from bot import messages
from bot.grammar import (
    AddSchedule,
    ArchiveSnapshot,
    Command,
    CreateSnapshot,
    DeleteSnapshot,
    Help,
    HoldSnapshot,
    ListSchedules,
    ListSnapshots,
    ListVms,
    Offsite,
    Prune,
    ReleaseHold,
    RemoveSchedule,
    RenameSnapshot,
    Restore,
    RetentionScope,
    RunDrill,
    RunSchedule,
    ShowUsage,
    Unlock,
    VerifyBackups,
)
from bot.previews import StoreRestorePreview
from core.domain.access import Action
from core.domain.confirmation import (
    ArchiveRequest,
    Confirmation,
    DeleteRequest,
    PruneRequest,
    RestoreRequest,
    UnlockRequest,
)
from core.domain.hosts import HostHealth, qualified, several
from core.domain.names import closest
from core.domain.operation import Actor, ProgressCallback, no_progress
from core.domain.retention import RetentionPolicy
from core.domain.schedule import ScheduleTask, parse_when
from core.domain.snapshot import CatalogueStatus, HoldKind, Snapshot
from core.domain.usage import ReclaimEstimate, UsageReport
from core.domain.vm import Vm
from core.errors import (
    CoreError,
    HypervisorUnavailable,
    InvalidInput,
    SnapshotMissing,
    SnapshotNotFound,
    VmNotFound,
)
from core.ports import ScheduleRunNow
from core.services.access import AccessService
from core.services.backups import BackupService
from core.services.drills import DrillOutcome, DrillService, DrillStatus
from core.services.facade import Core
from core.services.locks import LockPreview
from core.services.overview import StorageGlance, VmOverview
from core.services.pruning import PrunePreview, policy_from_counts
from core.services.snapshots import RestorePreview, VmSnapshots
from core.services.usage import UsageService

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """Text to show the person who asked."""

    text: str


@dataclass(frozen=True, slots=True)
class ConfirmRestore:
    """A restore to confirm by typing ``typed_name``. ``safety_snapshot`` None: the restore
    changes no existing VM (a copy, or a deleted VM defined again), so there is none to take."""

    confirmation: Confirmation
    preview: RestorePreview | StoreRestorePreview
    safety_snapshot: bool | None

    @property
    def typed_name(self) -> str:
        if isinstance(self.preview, StoreRestorePreview):
            return self.preview.typed_name
        return qualified(self.preview.vm.host, self.preview.vm.name)


@dataclass(frozen=True, slots=True)
class PickSnapshot:
    """``/restore <vm>`` without a snapshot: choose one of these first (``as_name``: then
    restore it as a new VM of that name)."""

    vm: VmSnapshots
    safety_snapshot: bool
    as_name: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmDelete:
    confirmation: Confirmation
    snapshot: Snapshot
    # What deleting it gives back (None: usage is not measured in this set-up).
    reclaim: ReclaimEstimate | None = None


@dataclass(frozen=True, slots=True)
class ConfirmArchive:
    """``/snapshot archive``: the full snapshot that would move to the backup store."""

    confirmation: Confirmation
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class ConfirmPrune:
    """``confirmation`` is None for a dry run (or when nothing would be deleted)."""

    confirmation: Confirmation | None
    preview: PrunePreview
    # What deleting ``preview.to_delete`` gives back (None: nothing to delete, or not measured).
    reclaim: ReclaimEstimate | None = None


@dataclass(frozen=True, slots=True)
class ConfirmUnlock:
    """An admin's ``/snapshot unlock``: what holds the VM, to judge before confirming."""

    confirmation: Confirmation
    preview: LockPreview


@dataclass(frozen=True, slots=True)
class UsageView:
    """``/snapshot usage``: the report and its chart (PNG). ``chart`` None: not drawn, and
    ``chart_note`` says why (the person may not see every VM it would show, or drawing
    failed)."""

    report: UsageReport
    chart: bytes | None
    chart_note: str | None = None


@dataclass(frozen=True, slots=True)
class DrillView:
    """``/snapshot drill``: how the drill went (its screenshot in ``outcome.drill``)."""

    outcome: DrillOutcome


Outcome = (
    Reply
    | UsageView
    | ConfirmRestore
    | PickSnapshot
    | ConfirmDelete
    | ConfirmArchive
    | ConfirmPrune
    | ConfirmUnlock
    | DrillView
)

# Commands that change something right away (or read the backup store for a while) and
# report progress, and their outcome, in the channel.
PROGRESSING = (CreateSnapshot, RenameSnapshot, VerifyBackups)


def required_action(command: Command) -> tuple[Action, str | None]:
    """The action a command needs, and the VM it is about (None: every VM or none)."""
    if isinstance(command, (AddSchedule, RemoveSchedule, RunSchedule)):
        return Action.SCHEDULE, None
    if isinstance(command, (HoldSnapshot, ReleaseHold)):
        # Seeing the VM is enough to ask; the hold service then lets only the snapshot's
        # creator or an admin (core.services.holds), and audits a refusal.
        return Action.VIEW, command.vm
    if isinstance(command, CreateSnapshot):
        return Action.SNAPSHOT, command.vm
    if isinstance(command, VerifyBackups):
        # Reading what is stored changes nothing but the damage marks people must see.
        return Action.SNAPSHOT, command.vm
    if isinstance(command, ArchiveSnapshot):
        # It deletes the internal snapshot (and its memory state), like a delete.
        return Action.DELETE, command.vm
    if isinstance(command, RenameSnapshot):
        return Action.RENAME, command.vm
    if isinstance(command, Restore):
        return Action.RESTORE, command.vm
    if isinstance(command, RunDrill):
        # A rehearsal of a restore: whoever may restore the VM may prove that it restores.
        return Action.RESTORE, command.vm
    if isinstance(command, DeleteSnapshot):
        return Action.DELETE, command.vm
    if isinstance(command, Prune):
        return Action.PRUNE, command.vm
    if isinstance(command, Unlock):
        return Action.UNLOCK, command.vm
    if isinstance(command, ListSnapshots):
        return Action.VIEW, command.vm
    if isinstance(command, ShowUsage):
        # A VM's name, or the host's (of which only what the person may see is shown).
        return Action.VIEW, command.target
    if isinstance(command, Offsite) and command.action == "undelete":
        # It gives a deleted restore point back to those who may restore the VM.
        return Action.RESTORE, command.vm
    if isinstance(command, Offsite) and command.action != "status":
        # Copying or checking every VM's restore points: what taking snapshots needs, for all.
        return Action.SNAPSHOT, None
    return Action.VIEW, None


class Dispatcher:
    """Runs commands for one front end. ``access`` None means the local operator (console)."""

    def __init__(
        self,
        core: Core,
        access: AccessService | None,
        scheduler: ScheduleRunNow | None = None,
    ) -> None:
        self._core = core
        self._access = access
        self._scheduler = scheduler

    def _backups(self) -> BackupService:
        """The backup store's use cases, or a refusal saying how to configure a store."""
        if self._core.backups is None:
            raise InvalidInput(messages.no_backup_store())
        return self._core.backups

    async def _offsite(self, command: Offsite) -> str:
        offsite = self._core.offsite
        if offsite is None:
            raise InvalidInput(messages.no_offsite())
        if command.action == "copy":
            return messages.offsite_copied(await offsite.copy_new())
        if command.action == "verify":
            return messages.offsite_verified(await offsite.verify())
        if command.action == "undelete" and command.vm is not None and command.label is not None:
            point = await offsite.bring_back(command.vm, command.label)
            # A listing syncs the catalogue with the store: the point is adopted again.
            try:
                await self._core.snapshots.list_snapshots(command.vm)
            except VmNotFound:
                await self._core.snapshots.list_snapshots()
            return messages.offsite_brought_back(point)
        return messages.offsite_status(await offsite.view())

    def _drills(self) -> DrillService:
        """Restore drills, or a refusal saying what they need."""
        if self._core.drills is None:
            raise InvalidInput(messages.no_drills())
        return self._core.drills

    async def drill_status(
        self, actor: Actor, vms: Sequence[Vm] | None = None
    ) -> list[DrillStatus] | None:
        """Each VM ``actor`` may see (of ``vms`` when the caller has listed them) with its last
        passing drill (None: no drills here)."""
        if self._core.drills is None:
            return None
        statuses = await self._core.drills.status(vms=vms)
        return await self._visible(actor, statuses, lambda s: s.vm_name)

    async def _require(self, actor: Actor, action: Action, vm: str | None) -> None:
        if self._access is not None:
            await self._access.require(actor, action, vm)

    async def handle(
        self, command: Command, actor: Actor, progress: ProgressCallback = no_progress
    ) -> Outcome:
        """Run ``command``. ``CoreError`` propagates for the front end to render."""
        if isinstance(command, Help):
            return Reply(messages.help_text(command.command))
        action, vm = required_action(command)
        # Listings and usage show each person what they may see (checked per VM inside).
        if not isinstance(command, (ListVms, ListSnapshots, ShowUsage)):
            await self._require(actor, action, vm)
        snapshots = self._core.snapshots
        if isinstance(command, ListVms):
            try:
                vms = await snapshots.list_vms()
            except HypervisorUnavailable:
                if not self._every_host_down():
                    raise
                vms = []  # each host is named below with what it last said
            mine = await self._visible(actor, vms, lambda v: qualified(v.vm.host, v.vm.name))
            return Reply(messages.vms_table(mine, self.hosts()))
        if isinstance(command, ListSnapshots):
            if command.vm is not None:
                await self._require(actor, Action.VIEW, command.vm)
            try:
                groups = await snapshots.list_snapshots(command.vm)
            except HypervisorUnavailable:
                if command.vm is not None or not self._every_host_down():
                    raise
                groups = []
            shown = await self.visible_groups(actor, groups)
            return Reply(
                messages.snapshots_table(shown, self.hosts() if command.vm is None else ())
            )
        if isinstance(command, CreateSnapshot):
            return await self._create(command, actor, progress)
        if isinstance(command, ShowUsage):
            return await self.usage_view(command.target, actor)
        if isinstance(command, VerifyBackups):
            verified = await self._backups().verify(command.vm, command.label, actor=actor)
            return Reply(messages.verify_report(verified))
        if isinstance(command, Offsite):
            return Reply(await self._offsite(command))
        if isinstance(command, RunDrill):
            drilled = await self._drills().run(
                command.vm, command.label, actor=actor, progress=progress
            )
            return DrillView(drilled)
        if isinstance(command, ArchiveSnapshot):
            return await self._request_archive(command, actor)
        if isinstance(command, HoldSnapshot):
            kind = HoldKind.VERIFIED if command.verified else HoldKind.INDEFINITE
            until = None
            if command.until is not None:
                kind, until = HoldKind.UNTIL, parse_date(command.until)
            held = await self._core.holds.hold(
                command.vm, command.label, kind, until, actor, self._access
            )
            return Reply(messages.held(held))
        if isinstance(command, ReleaseHold):
            released = await self._core.holds.release(
                command.vm, command.label, actor, self._access
            )
            return Reply(messages.released(released))
        if isinstance(command, (AddSchedule, ListSchedules, RemoveSchedule, RunSchedule)):
            return await self._schedule_command(command, actor)
        if isinstance(command, RenameSnapshot):
            renamed = await snapshots.rename_snapshot(
                command.vm, command.old_label, command.new_label, actor=actor
            )
            return Reply(messages.renamed(renamed))
        if isinstance(command, Restore):
            return await self._request_restore(command, actor)
        if isinstance(command, DeleteSnapshot):
            return await self._request_delete(command, actor)
        if isinstance(command, Unlock):
            return await self._request_unlock(command, actor)
        assert isinstance(command, Prune)
        return await self._request_prune(command, actor)

    async def _create(
        self, command: CreateSnapshot, actor: Actor, progress: ProgressCallback
    ) -> Reply:
        if command.incremental:
            backup = await self._backups().create_backup(
                command.vm,
                command.label,
                actor=actor,
                description=command.description,
                progress=progress,
            )
            snapshot, text = backup.snapshot, messages.backup_created(backup)
        else:
            created = await self._core.snapshots.create_snapshot(
                command.vm,
                command.label,
                actor=actor,
                description=command.description,
                progress=progress,
                check_space=command.check_space,
            )
            snapshot, text = created.snapshot, None
        if command.hold:
            try:
                snapshot = await self._core.holds.hold(
                    command.vm, snapshot.label, HoldKind.VERIFIED, None, actor, self._access
                )
            except CoreError as exc:
                # Taken but not held (the VM went busy in between): say both.
                taken = text if text is not None else messages.created(created)
                return Reply(taken + "\n" + messages.not_held_after_create(snapshot, exc))
        if text is not None:
            return Reply(text)
        return Reply(messages.created(replace(created, snapshot=snapshot)))

    async def _request_restore(self, command: Restore, actor: Actor) -> Outcome:
        if command.as_name is not None:
            # The copy is a VM too: the role must cover its name as well as the original's.
            await self._require(actor, Action.RESTORE, command.as_name)
        if command.label is None:
            group = await self._group(command.vm)
            return PickSnapshot(group, command.safety_snapshot, command.as_name)
        try:
            preview = await self._core.snapshots.restore_preview(command.vm, command.label)
        except VmNotFound as missing:
            # Its restore points in the backup store outlive it: defined again, or copied.
            deleted = await self._deleted_preview(command.vm, command.label, command.as_name)
            if deleted is None:
                raise missing from None
            return await self._request_store_restore(deleted, actor)
        if preview.snapshot.kind.in_backup_store:
            store = StoreRestorePreview(
                qualified(preview.vm.host, preview.vm.name),
                preview.vm,
                preview.snapshot,
                preview.newer,
                command.as_name,
            )
            return await self._request_store_restore(store, actor, command.safety_snapshot)
        if command.as_name is not None:
            raise InvalidInput(
                f"`{preview.snapshot.label}` of {preview.vm.name} is a full snapshot inside the "
                "VM's image; --as restores from the backup store. Archive it first "
                f"(/snapshot archive {preview.vm.name} {preview.snapshot.label}) or take an "
                "--incremental snapshot"
            )
        # The exact snapshot shown: its libvirt name never changes, even if it is renamed.
        shown = preview.snapshot
        # The VM with its host where there are several: confirmed later, it must be this one.
        request = RestoreRequest(
            qualified(preview.vm.host, preview.vm.name),
            shown.label,
            shown.libvirt_name,
            command.safety_snapshot,
        )
        confirmation = await self._core.confirmations.create(request, actor)
        return ConfirmRestore(confirmation, preview, command.safety_snapshot)

    async def _request_store_restore(
        self, preview: StoreRestorePreview, actor: Actor, safety_snapshot: bool = True
    ) -> ConfirmRestore:
        shown = preview.snapshot
        safety = None if preview.creates_vm else safety_snapshot
        request = RestoreRequest(
            preview.vm_name,
            shown.label,
            shown.libvirt_name,
            bool(safety),
            as_name=preview.as_name,
            backup_store=True,
            define=preview.vm is None and preview.as_name is None,
        )
        confirmation = await self._core.confirmations.create(request, actor)
        return ConfirmRestore(confirmation, preview, safety)

    async def _group(self, vm_name: str) -> VmSnapshots:
        """A VM's snapshots, or the restore points left of a VM that no longer exists."""
        try:
            (group,) = await self._core.snapshots.list_snapshots(vm_name)
            return group
        except VmNotFound as exc:
            gone = await self._gone(vm_name)
            if gone is None:
                raise exc from None
            return replace(gone, snapshots=tuple(s for s in gone.snapshots if _restorable(s)))

    async def _gone(self, vm_name: str) -> VmSnapshots | None:
        for group in await self._core.snapshots.list_snapshots():
            if group.vm is None and group.vm_name == vm_name:
                return group
        return None

    async def _deleted_preview(
        self, vm_name: str, label: str, as_name: str | None
    ) -> StoreRestorePreview | None:
        """The restore point ``label`` of a VM that no longer exists (None: nothing of it is
        known)."""
        gone = await self._gone(vm_name)
        if gone is None:
            return None
        points = [s for s in gone.snapshots if _restorable(s)]
        found = next((s for s in points if s.label == label), None)
        if found is None:
            names = [s.label for s in points]
            raise SnapshotNotFound(vm_name, label, closest(label, names) or names)
        if found.status is CatalogueStatus.MISSING:
            raise SnapshotMissing(vm_name, found.label)
        newer = tuple(s for s in points if s.created_at > found.created_at)
        return StoreRestorePreview(vm_name, None, found, newer, as_name)

    async def _request_archive(self, command: ArchiveSnapshot, actor: Actor) -> Outcome:
        preview = await self._core.snapshots.restore_preview(command.vm, command.label)
        shown = preview.snapshot
        if shown.kind.in_backup_store:
            raise InvalidInput(
                f"`{shown.label}` of {preview.vm.name} is already in the backup store "
                f"({shown.kind.value}); only full snapshots can be archived"
            )
        request = ArchiveRequest(
            qualified(preview.vm.host, preview.vm.name), shown.label, shown.libvirt_name
        )
        confirmation = await self._core.confirmations.create(request, actor)
        return ConfirmArchive(confirmation, shown)

    async def _request_delete(self, command: DeleteSnapshot, actor: Actor) -> Outcome:
        preview = await self._core.snapshots.delete_preview(command.vm, command.label)
        shown = preview.snapshot
        request = DeleteRequest(
            qualified(preview.vm.host, preview.vm.name), shown.label, shown.libvirt_name
        )
        confirmation = await self._core.confirmations.create(request, actor)
        return ConfirmDelete(confirmation, shown, await self._reclaim([shown]))

    async def _reclaim(self, snapshots: Sequence[Snapshot]) -> ReclaimEstimate | None:
        """What deleting ``snapshots`` frees, for a preview (None where usage is not
        measured, or measuring failed: the preview still shows what would be deleted)."""
        if self._core.usage is None or not snapshots:
            return None
        try:
            return await self._core.usage.prune_estimate(snapshots)
        except CoreError as exc:
            logger.warning("could not estimate what deleting frees: %s", exc)
            return None

    def _usage(self) -> UsageService:
        if self._core.usage is None:
            raise InvalidInput(messages.usage_not_measured())
        return self._core.usage

    async def usage_view(self, target: str | None, actor: Actor) -> UsageView:
        """The usage report of the host or of one VM, cut to what ``actor`` may see, and the
        chart when it shows nothing else."""
        report = await self._usage().report(target)
        if report.vm is not None:
            # The VM as typed: hv1/web-01 names its host, where web-01 alone may be another's.
            await self._require(actor, Action.VIEW, target or report.vm)
            return await self._with_chart(report, report.vm)
        cut = await self.visible_usage(actor, report)
        if len(cut.vms) == len(report.vms):
            return await self._with_chart(report, None)
        if not cut.vms:
            # Someone who may see no VM at all learns nothing of the host either (refused, and
            # audited, like any request without the right).
            await self._require(actor, Action.VIEW, None)
        return UsageView(cut, None, messages.chart_withheld())

    async def visible_usage(self, actor: Actor, report: UsageReport) -> UsageReport:
        """``report`` without the VMs ``actor`` may not see, nor the filesystems holding only
        their disks (and those filesystems' forecasts)."""
        visible = await self._visible(actor, report.vms, lambda v: v.vm_name)
        if len(visible) == len(report.vms):
            return report
        names = {v.vm_name for v in visible}
        filesystems = tuple(
            replace(fs, vms=tuple(n for n in fs.vms if n in names))
            for fs in report.filesystems
            if not fs.vms or any(n in names for n in fs.vms)
        )
        wheres = {fs.where for fs in filesystems}
        return replace(
            report,
            vms=tuple(visible),
            filesystems=filesystems,
            forecasts=tuple(f for f in report.forecasts if f.where in wheres),
        )

    async def _with_chart(self, report: UsageReport, vm: str | None) -> UsageView:
        try:
            chart = await self._usage().chart(vm)
        except CoreError as exc:
            logger.warning("could not draw the usage chart: %s", exc)
            return UsageView(report, None, messages.chart_failed(str(exc)))
        return UsageView(report, chart)

    async def _request_unlock(self, command: Unlock, actor: Actor) -> Outcome:
        preview = await self._core.locks.preview(command.vm)
        confirmation = await self._core.confirmations.create(
            UnlockRequest(qualified(preview.vm.host, preview.vm.name), preview.operation.id), actor
        )
        return ConfirmUnlock(confirmation, preview)

    async def _request_prune(self, command: Prune, actor: Actor) -> Outcome:
        policy = self._policy(
            dict(command.keep),
            command.scope.include_manual,
            command.scope.safety_keep_last,
            command.scope.safety_keep_days,
        )
        preview = await self._core.pruning.preview(command.vm, policy)
        reclaim = await self._reclaim([s for p in preview.plans for s in p.to_delete])
        if command.dry_run or not preview.to_delete:
            return ConfirmPrune(None, preview, reclaim)
        request = PruneRequest(
            command.vm,
            keep=tuple(command.keep),
            pinned=tuple((uuid, tuple(names)) for uuid, names in preview.to_delete.items()),
            include_manual=policy.include_manual,
            safety_keep_last=policy.safety_keep_last,
            safety_keep_days=policy.safety_keep_days,
        )
        confirmation = await self._core.confirmations.create(request, actor)
        return ConfirmPrune(confirmation, preview, reclaim)

    async def confirm(
        self,
        confirmation_id: str,
        actor: Actor,
        progress: ProgressCallback = no_progress,
        *,
        safety_snapshot: bool | None = None,
    ) -> str:
        """Run a confirmed request (once) and return the outcome text."""
        confirmation = await self.claim(confirmation_id, actor)
        return await self.run_confirmed(
            confirmation, actor, progress, safety_snapshot=safety_snapshot
        )

    async def claim(self, confirmation_id: str, actor: Actor) -> Confirmation:
        """Use the confirmation (``ConfirmationSpent`` if it cannot be)."""
        return await self._core.confirmations.claim(confirmation_id, actor)

    async def run_confirmed(
        self,
        confirmation: Confirmation,
        actor: Actor,
        progress: ProgressCallback = no_progress,
        *,
        safety_snapshot: bool | None = None,
    ) -> str:
        """Run what a claimed confirmation stands for; access is checked again."""
        request = confirmation.request
        if isinstance(request, RestoreRequest) and request.backup_store:
            return await self._restore_from_store(request, actor, progress, safety_snapshot)
        if isinstance(request, ArchiveRequest):
            await self._require(actor, Action.DELETE, request.vm)
            archived = await self._backups().archive(
                request.vm,
                request.label,
                actor=actor,
                progress=progress,
                libvirt_name=request.libvirt_name,
            )
            return messages.archived(archived)
        if isinstance(request, RestoreRequest):
            await self._require(actor, Action.RESTORE, request.vm)
            restored = await self._core.snapshots.restore(
                request.vm,
                request.label,
                actor=actor,
                safety_snapshot=request.safety_snapshot
                if safety_snapshot is None
                else safety_snapshot,
                progress=progress,
                libvirt_name=request.libvirt_name,
            )
            return messages.restored(restored)
        if isinstance(request, UnlockRequest):
            await self._require(actor, Action.UNLOCK, request.vm)
            unlocked = await self._core.locks.unlock(request.vm, request.operation_id, actor)
            return messages.unlocked(unlocked)
        if isinstance(request, DeleteRequest):
            await self._require(actor, Action.DELETE, request.vm)
            deleted = await self._core.snapshots.delete_snapshot(
                request.vm,
                request.label,
                actor=actor,
                progress=progress,
                libvirt_name=request.libvirt_name,
            )
            return messages.deleted(deleted)
        await self._require(actor, Action.PRUNE, request.vm)
        policy = self._policy(
            dict(request.keep),
            request.include_manual,
            request.safety_keep_last,
            request.safety_keep_days,
        )
        results = await self._core.pruning.apply(
            {uuid: list(names) for uuid, names in request.pinned},
            policy,
            actor=actor,
            progress=progress,
        )
        return messages.prune_result(results)

    async def _restore_from_store(
        self,
        request: RestoreRequest,
        actor: Actor,
        progress: ProgressCallback,
        safety_snapshot: bool | None,
    ) -> str:
        await self._require(actor, Action.RESTORE, request.vm)
        if request.as_name is not None:
            await self._require(actor, Action.RESTORE, request.as_name)
        backups = self._backups()
        if request.creates_vm:
            result = await backups.restore_as(
                request.vm,
                request.label,
                request.as_name,
                actor=actor,
                progress=progress,
                libvirt_name=request.libvirt_name,
            )
        else:
            result = await backups.restore_backup(
                request.vm,
                request.label,
                actor=actor,
                safety_snapshot=request.safety_snapshot
                if safety_snapshot is None
                else safety_snapshot,
                progress=progress,
                libvirt_name=request.libvirt_name,
            )
        return messages.backup_restored(result)

    async def cancel(self, confirmation_id: str, actor: Actor) -> str:
        """Spend the confirmation without running it, so a later click cannot run it."""
        confirmation = await self._core.confirmations.claim(confirmation_id, actor)
        return messages.cancelled(confirmation.kind.value, confirmation.vm_name)

    async def _schedule_command(
        self, command: AddSchedule | ListSchedules | RemoveSchedule | RunSchedule, actor: Actor
    ) -> Reply:
        schedules = self._core.schedules
        if isinstance(command, ListSchedules):
            return Reply(messages.schedules_table(await schedules.list()))
        if isinstance(command, RemoveSchedule):
            return Reply(messages.schedule_removed(await schedules.remove(command.key)))
        if isinstance(command, RunSchedule):
            schedule = await schedules.find(command.key)
            if self._scheduler is None:
                raise InvalidInput("the scheduler does not run in this mode; use `snapbot run`")
            report = await self._scheduler.run_now(schedule)
            if report is None:
                return Reply(messages.run_taken(schedule))
            return Reply(messages.run_report(report))
        timezone = command.timezone or self._core.settings.timezone
        when = parse_when(list(command.when), timezone)
        scope = command.scope
        if not command.keep and scope != RetentionScope():
            raise InvalidInput(
                "--include-manual and --safety-keep-… shape a retention policy; add its "
                "--keep-… rules (e.g. --keep-daily 7), or leave them out for a schedule that "
                "does not prune"
            )
        policy = None
        if command.keep:
            # Stored without the configured safety rule, so a later change of it applies.
            policy = policy_from_counts(
                dict(command.keep),
                include_manual=scope.include_manual,
                safety_keep_last=scope.safety_keep_last,
                safety_keep_days=scope.safety_keep_days,
            )
        channel = _channel_id(command.channel) or actor.channel
        task = ScheduleTask.SNAPSHOT
        if command.incremental:
            task = ScheduleTask.INCREMENTAL
        elif command.verify:
            task = ScheduleTask.VERIFY
        elif command.drill:
            task = ScheduleTask.DRILL
            self._drills()  # refused at once where drills cannot run
        if task is not ScheduleTask.SNAPSHOT or command.archive:
            self._backups()  # refused at once where no backup store is configured
        added = await schedules.add(
            command.name,
            command.vms,
            when,
            policy,
            channel,
            actor,
            task=task,
            archive=command.archive,
        )
        return Reply(messages.schedule_added(added, schedules.next_fire(added)))

    def _policy(
        self,
        keep: dict[str, int],
        include_manual: bool,
        safety_keep_last: int | None,
        safety_keep_days: int | None,
    ) -> RetentionPolicy:
        """A ``/prune`` policy, the configured safety rule filled in where it sets none."""
        settings = self._core.settings
        return policy_from_counts(
            keep,
            include_manual=include_manual,
            safety_keep_last=safety_keep_last,
            safety_keep_days=safety_keep_days,
        ).with_safety_defaults(settings.safety_keep_last, settings.safety_keep_days)

    # -- what surfaces other than commands need (Home, the Verified button, the modal) -------

    async def overview(self) -> list[VmOverview]:
        """Every VM with its snapshots counted, from the catalogue (no sync with libvirt), for
        views that show them to several people: pass it through ``visible_overview`` per
        person, then ``with_newest`` for the VMs shown. Empty when no host of several answers
        (the views then name each host)."""
        try:
            return await self._core.overview.vms()
        except HypervisorUnavailable:
            if not self._every_host_down():
                raise
            return []

    async def visible_overview(self, actor: Actor, vms: Sequence[VmOverview]) -> list[VmOverview]:
        """The VMs of ``vms`` that ``actor`` may see."""
        return await self._visible(
            actor, vms, lambda v: qualified(v.vm.host if v.vm else None, v.vm_name)
        )

    async def with_newest(self, vms: Sequence[VmOverview]) -> list[VmOverview]:
        """``vms`` with their newest snapshots (one catalogue query for all of them)."""
        return await self._core.overview.with_newest(vms)

    async def home_storage(self) -> StorageGlance | None:
        """Storage as last sampled (the daily usage samples), for the Home tab; None before
        the first sample. Cut it to what each person may see (``StorageGlance.disk_bytes``
        of their VMs)."""
        return await self._core.overview.storage()

    async def visible_groups(
        self, actor: Actor, groups: Sequence[VmSnapshots]
    ) -> list[VmSnapshots]:
        """The VMs of ``groups`` that ``actor`` may see."""
        return await self._visible(
            actor, groups, lambda g: qualified(g.vm.host if g.vm else None, g.vm_name)
        )

    def _every_host_down(self) -> bool:
        """Several hosts, and none answers: listings then name each one instead of failing."""
        fleet = several(self.hosts())
        return bool(fleet) and not any(h.reachable for h in fleet)

    def hosts(self) -> list[HostHealth]:
        """Every configured host and whether it answers (listings, Home and reports group by
        host, and name those that are down, when there are several)."""
        return self._core.watch.health()

    async def snapshot(self, vm: str, label: str) -> Snapshot:
        """A VM's snapshot by label (``SnapshotNotFound`` lists the closest)."""
        return await self._core.snapshots.find(vm, label)

    async def verified(self, vm: str, label: str, actor: Actor) -> Snapshot:
        """The Verified button: the change a before-change snapshot guarded is good, so its
        hold ends. The hold service decides who may (the creator or an admin)."""
        return await self._core.holds.release(vm, label, actor, self._access)

    async def confirmation(self, confirmation_id: str) -> Confirmation | None:
        """A stored confirmation, unclaimed, to check a modal's typed name against."""
        return await self._core.confirmations.get(confirmation_id)

    async def _visible(
        self, actor: Actor, items: Sequence[T], name_of: Callable[[T], str]
    ) -> list[T]:
        if self._access is None:
            return list(items)
        visible = set(await self._access.visible(actor, [name_of(i) for i in items]))
        return [i for i in items if name_of(i) in visible]


def _restorable(snapshot: Snapshot) -> bool:
    """Of a VM that no longer exists, only what the backup store holds can be restored."""
    return snapshot.kind.in_backup_store


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _count(value: object) -> int | None:
    return None if value is None else int(str(value))


def parse_date(text: str) -> datetime:
    """``2026-12-31`` (end of that day, UTC) or an ISO timestamp."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-12-31"
        ) from None
    if len(text) == 10:
        moment = moment.replace(hour=23, minute=59, second=59)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _channel_id(text: str | None) -> str | None:
    """``<#C0123|ops>`` (how Slack escapes a channel mention) -> ``C0123``; ids and ``#names``
    pass through (chat.postMessage accepts a public channel's name)."""
    if text is None:
        return None
    match = re.fullmatch(r"<#([A-Z0-9]+)(?:\|[^>]*)?>", text.strip())
    channel = match.group(1) if match else text.strip()
    # Channel ids are about a dozen characters; the catalogue keeps 64.
    if not channel or len(channel) > 64 or any(c.isspace() for c in channel):
        raise InvalidInput(
            f"{text[:40]!r} is not a channel; give it as #name, a channel id, or mention it"
        )
    return channel
