"""Prune: preview what a retention policy keeps and deletes, then delete exactly that.

The same pure engine (``core.domain.retention``) serves the preview and the deletion. Confirming
a preview deletes only snapshots the preview listed for deletion *and* that a fresh plan still
deletes, so a snapshot held or taken between preview and confirm is never lost to a stale page.
Each deletion is an ordinary delete operation: locked, audited, measured; it checks the hold
again under the VM's lock, so a hold placed after the fresh plan still wins (``held``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from core.domain.operation import (
    SCHEDULER_VIA,
    Actor,
    OperationKind,
    OperationStatus,
    ProgressCallback,
    no_progress,
)
from core.domain.retention import RetentionPolicy, items_from_snapshots, plan_retention
from core.domain.snapshot import CatalogueStatus, Snapshot, SnapshotKind
from core.domain.vm import Vm
from core.errors import CoreError, InvalidInput, SnapshotHeld
from core.ports import Catalogue, Clock, Hypervisor
from core.services.backups import ArchiveResult, BackupService
from core.services.operations import OperationRunner
from core.services.snapshots import DeleteResult, SnapshotService

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PruneDecision:
    snapshot: Snapshot
    keep: bool
    reason: str


@dataclass(frozen=True, slots=True)
class VmPrunePlan:
    """One VM's decisions, newest first. ``refused`` says why nothing will be deleted."""

    vm: Vm
    decisions: tuple[PruneDecision, ...]
    refused: str | None = None

    @property
    def to_delete(self) -> tuple[Snapshot, ...]:
        if self.refused:
            return ()
        return tuple(d.snapshot for d in self.decisions if not d.keep)

    @property
    def memory_bytes_freed(self) -> int:
        """Saved memory states of the deleted snapshots: freed for sure. Disk blocks are freed
        only where no other snapshot or the VM still uses them, which only deleting can tell."""
        return sum(s.memory_bytes or 0 for s in self.to_delete)


@dataclass(frozen=True, slots=True)
class PrunePreview:
    policy: RetentionPolicy
    timezone: str
    plans: tuple[VmPrunePlan, ...]

    @property
    def to_delete(self) -> dict[str, list[str]]:
        """What a confirmation pins: VM uuid -> libvirt names shown for deletion."""
        return {p.vm.uuid: [s.libvirt_name for s in p.to_delete] for p in self.plans if p.to_delete}


@dataclass(slots=True)
class VmPruneResult:
    vm_name: str
    deleted: list[DeleteResult] = field(default_factory=list)
    kept_since_preview: list[str] = field(default_factory=list)
    # Held after the plan was made: the delete refused them under the lock.
    held: list[SnapshotHeld] = field(default_factory=list)
    failed: list[tuple[str, CoreError]] = field(default_factory=list)
    skipped: str | None = None
    # Full snapshots moved to the backup store instead of deleted (a policy with archive).
    archived: list[ArchiveResult] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(r.freed_bytes or 0 for r in self.deleted) + sum(
            r.freed_bytes or 0 for r in self.archived
        )


def summary_of(result: VmPruneResult) -> str:
    """A confirmed prune's outcome on one VM, for its audit record."""
    if result.skipped is not None:
        return f"nothing deleted: {result.skipped}"
    parts = [f"deleted {len(result.deleted)}"]
    if result.archived:
        parts.append(f"archived {len(result.archived)} to the backup store")
    if result.kept_since_preview:
        parts.append(f"{len(result.kept_since_preview)} no longer to delete since the preview")
    if result.held:
        parts.append(f"{len(result.held)} held meanwhile")
    if result.failed:
        parts.append(f"{len(result.failed)} failed")
    return ", ".join(parts)


class PruneService:
    """Retention previews and confirmed deletions."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        catalogue: Catalogue,
        snapshots: SnapshotService,
        clock: Clock,
        timezone: tzinfo,
        runner: OperationRunner,
        backups: BackupService | None = None,
    ) -> None:
        self._runner = runner
        self._backups = backups
        self._hv = hypervisor
        self._catalogue = catalogue
        self._snapshots = snapshots
        self._clock = clock
        self._tz = timezone

    async def preview(
        self,
        vm_name: str | None,
        policy: RetentionPolicy,
        *,
        kinds: frozenset[SnapshotKind] | None = None,
    ) -> PrunePreview:
        """The plan for one VM, or for every VM (None), without changing anything. With
        ``kinds``, only snapshots of those kinds are judged (a schedule's policy covers the
        kind it takes, never another's)."""
        policy.validate()
        if vm_name is not None:
            vms = [await self._snapshots.vm(vm_name)]
        else:
            vms = await self._hv.list_vms()
        plans = [await self._plan(vm, policy, kinds) for vm in vms]
        return PrunePreview(policy, str(self._tz), tuple(p for p in plans if p.decisions))

    async def apply(
        self,
        pinned: Mapping[str, Sequence[str]],
        policy: RetentionPolicy,
        *,
        actor: Actor,
        progress: ProgressCallback = no_progress,
        kinds: frozenset[SnapshotKind] | None = None,
        archive: bool = False,
    ) -> list[VmPruneResult]:
        """Delete the snapshots ``pinned`` (VM uuid -> libvirt names, from a preview) that a
        fresh plan still deletes. One VM's failure does not stop the others. With ``archive``
        full snapshots are moved to the backup store instead of deleted."""
        policy.validate()
        if archive and self._backups is None:
            raise InvalidInput(
                "archiving needs a backup store: set SNAPBOT_BACKUP_DIR, or prune without it"
            )
        results = []
        for vm_uuid, names in pinned.items():
            try:
                vm = await self._hv.get_vm_by_uuid(vm_uuid)
            except CoreError as exc:
                results.append(VmPruneResult(vm_uuid, skipped=str(exc)))
                continue
            result = VmPruneResult(vm.name)
            results.append(result)
            plan = await self._plan(vm, policy, kinds)
            if plan.refused:
                result.skipped = plan.refused
                continue
            still = {s.libvirt_name: s for s in plan.to_delete}
            for name in names:
                snap = still.get(name)
                if snap is None:
                    result.kept_since_preview.append(name)
                    continue
                try:
                    if archive and self._backups and snap.kind is SnapshotKind.FULL:
                        result.archived.append(
                            await self._backups.archive(
                                vm.name,
                                snap.label,
                                actor=actor,
                                progress=progress,
                                libvirt_name=snap.libvirt_name,
                            )
                        )
                        continue
                    result.deleted.append(
                        await self._snapshots.delete_snapshot(
                            vm.name,
                            snap.label,
                            actor=actor,
                            progress=progress,
                            libvirt_name=snap.libvirt_name,
                        )
                    )
                except SnapshotHeld as exc:
                    result.held.append(exc)
                except CoreError as exc:
                    logger.warning("prune of %s on %s failed: %s", snap.label, vm.name, exc)
                    result.failed.append((snap.label, exc))
        for result in results:
            await self._runner.record_summary(
                OperationKind.PRUNE,
                actor,
                result.vm_name,
                ok=not result.failed and result.skipped is None,
                outcome=summary_of(result),
            )
        return results

    async def _plan(
        self, vm: Vm, policy: RetentionPolicy, kinds: frozenset[SnapshotKind] | None = None
    ) -> VmPrunePlan:
        await self._snapshots.sync(vm)
        present = [
            s
            for s in await self._catalogue.snapshots(vm.uuid)
            if s.status is CatalogueStatus.PRESENT and (kinds is None or s.kind in kinds)
        ]
        if not present:
            return VmPrunePlan(vm, ())
        by_name = {s.libvirt_name: s for s in present}
        # Internal snapshots and restore points in the backup store are judged apart: "keep 7
        # daily" keeps 7 of each, so hourly internal snapshots never push a nightly
        # incremental out (or the other way round).
        decisions: list[PruneDecision] = []
        refused: str | None = None
        for group in (
            [s for s in present if not s.kind.in_backup_store],
            [s for s in present if s.kind.in_backup_store],
        ):
            if not group:
                continue
            plan = plan_retention(
                items_from_snapshots(group), policy, self._tz, now=self._clock.now()
            )
            refused = refused or plan.refused
            decisions += (PruneDecision(by_name[d.key], d.keep, d.reason) for d in plan.decisions)
        decisions.sort(key=lambda d: d.snapshot.created_at, reverse=True)
        return VmPrunePlan(vm, tuple(decisions), refused or await self._failed_schedule(vm))

    async def _failed_schedule(self, vm: Vm) -> str | None:
        """Old snapshots are the fallback while the newest scheduled snapshot is failing."""
        for op in await self._catalogue.operations(vm.uuid, limit=50):
            if op.kind is OperationKind.SNAPSHOT and op.via == SCHEDULER_VIA:
                if op.status is OperationStatus.FAILED:
                    return (
                        f"its newest scheduled snapshot failed at "
                        f"{op.started_at:%Y-%m-%d %H:%M} UTC; old snapshots are kept as the "
                        "fallback until a scheduled snapshot succeeds"
                    )
                return None
        return None


def policy_from_counts(
    counts: Mapping[str, int],
    *,
    include_manual: bool = False,
    safety_keep_last: int | None = None,
    safety_keep_days: int | None = None,
) -> RetentionPolicy:
    """A policy from ``/prune`` options (``last``, ``daily``, ...); refused when empty.
    ``safety_keep_*`` None: the configured default (``RetentionPolicy.with_safety_defaults``)."""
    if not counts:
        raise InvalidInput(
            "give a retention policy, e.g. --keep-last 3 --keep-daily 7 --keep-weekly 4"
        )
    c = dict(counts)
    return RetentionPolicy.from_counts(
        last=c.pop("last", 0),
        hourly=c.pop("hourly", 0),
        daily=c.pop("daily", 0),
        weekly=c.pop("weekly", 0),
        monthly=c.pop("monthly", 0),
        yearly=c.pop("yearly", 0),
        include_manual=include_manual,
        safety_keep_last=safety_keep_last,
        safety_keep_days=safety_keep_days,
    )
