"""Every port the services and the scheduler depend on, in one place. Adapters implement them
(``core.adapters``, ``core.catalogue``, the front ends for ``Directory`` and ``Reporter``);
tests use fakes that do too (``tests.fakes``). Nothing here names an adapter or a library.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from core.domain.access import Action
from core.domain.backups import (
    BackupSource,
    DiskExport,
    DiskWriter,
    GcReport,
    Manifest,
    PointRef,
    RestoreTarget,
    VerifyReport,
)
from core.domain.confirmation import Confirmation
from core.domain.drills import Drill, ReadySignal
from core.domain.hosts import HostIdentity
from core.domain.offsite import CopyReport, DeletionReport, OffsiteStatus
from core.domain.operation import Actor, Operation, OperationStatus, Stage
from core.domain.schedule import Schedule, When
from core.domain.snapshot import CatalogueStatus, Hold, HypervisorSnapshot, Snapshot
from core.domain.usage import Forecast, SampleKind, StoreUsage, UsageHistory, UsageSample
from core.domain.vm import StateCause, StoragePlace, Vm, VmFacts, VmState
from core.services.reports import Digest, RunReport

# --- time ---------------------------------------------------------------------------------------


class Clock(Protocol):
    """Source of the current time (timezone-aware UTC)."""

    def now(self) -> datetime: ...


# --- the hypervisor ------------------------------------------------------------------------------


class Hypervisor(Protocol):
    """Snapshot-relevant control of the VMs of one hypervisor host, or of several
    (``core.services.fleet.Fleet`` routes each call to the VM's host). Every method may raise
    ``HypervisorError`` subclasses; a mutating method that raises ``HypervisorUnavailable`` has
    an unknown outcome and must be reconciled, never retried blindly."""

    async def list_vms(self) -> list[Vm]:
        """Every VM of every reachable host (each with its ``host`` where there are several)."""
        ...

    async def get_vm(self, name: str) -> Vm:
        """``name`` alone, or ``host/name``. Raise ``VmNotFound`` (without suggestions) when no
        VM has that name, ``VmAmbiguous`` when several hosts have one."""
        ...

    async def get_vm_by_uuid(self, uuid: str) -> Vm: ...

    async def vm_facts(self, vm: Vm) -> VmFacts: ...

    async def host_of(self, vm: Vm) -> HostIdentity:
        """The host ``vm`` lives on: which host its records and operations belong to (its
        UUID from the capabilities, whatever URI reached it), and the URI snapbot uses."""
        ...

    async def hosts(self) -> list[HostIdentity]:
        """The hosts that answer now, in configured order (one where there is one)."""
        ...

    async def snapshot_places(self, facts: VmFacts) -> list[StoragePlace]:
        """Every place a snapshot of the VM writes to, with its free space where it can be
        known (``available_bytes`` None and ``unknown_because`` where it cannot)."""
        ...

    async def list_snapshots(self, vm: Vm) -> list[HypervisorSnapshot]: ...

    async def memory_state_sizes(self, vm: Vm) -> Mapping[str, int]:
        """Saved memory bytes per libvirt snapshot name (empty if they cannot be measured)."""
        ...

    async def disk_allocation(self, vm: Vm) -> int | None:
        """Bytes the VM's writable disk images occupy on the host, snapshots included."""
        ...

    async def create_snapshot(
        self, vm: Vm, libvirt_name: str, description: str
    ) -> HypervisorSnapshot: ...

    async def revert_snapshot(self, vm: Vm, libvirt_name: str, *, paused: bool) -> None:
        """Revert; with ``paused`` a snapshot taken running comes back paused."""
        ...

    async def delete_snapshot(self, vm: Vm, libvirt_name: str) -> None: ...

    async def set_snapshot_description(self, vm: Vm, libvirt_name: str, description: str) -> None:
        """Replace the snapshot's description in libvirt's metadata (its name, which revert
        uses, stays): a catalogue rebuilt from libvirt then reads the current label."""
        ...

    async def discard_orphan(self, vm: Vm, libvirt_name: str) -> bool:
        """Remove a snapshot named ``libvirt_name`` that the VM's images hold but libvirt has
        no record of (QEMU finished it after libvirtd died); True when one was removed."""
        ...

    async def job_active(self, vm: Vm) -> bool | None:
        """Whether libvirt runs a job (a memory save, a dump, a migration) on the VM now;
        None when it cannot tell."""
        ...

    async def state(self, vm: Vm) -> VmState: ...

    async def state_cause(self, vm: Vm) -> StateCause:
        """Why the VM is in its current state (libvirt's state reason)."""
        ...

    async def stop(self, vm: Vm) -> None:
        """Power the VM off at once (its current state is being replaced anyway)."""
        ...

    async def start(self, vm: Vm) -> None: ...

    async def resume(self, vm: Vm) -> None: ...

    async def close(self) -> None: ...


class HostHypervisor(Hypervisor, Protocol):
    """One hypervisor host, reached by one URI: what its watch and its reconciler work on."""

    @property
    def uri(self) -> str: ...

    async def host_uuid(self) -> str:
        """The hypervisor host's UUID (from its capabilities): which host a VM's records
        belong to, whatever URI reached it."""
        ...


# --- the catalogue: snapshot records, operations under per-VM locks, confirmations --------------


class DatabaseClock(Protocol):
    async def database_now(self) -> datetime:
        """The database's clock: lock heartbeats, their staleness and leases are judged by it,
        so replicas on hosts whose clocks disagree still agree on which lock is stale."""
        ...


@dataclass(frozen=True, slots=True)
class SnapshotTally:
    """One VM's snapshot records, counted: ``present`` and ``missing`` by catalogue status,
    ``damaged`` restore points, ``held`` snapshots, its ``full`` snapshots present and
    ``memory_bytes`` of their memory states. ``vm_name`` is a name its records carry (for a
    VM libvirt no longer has)."""

    vm_name: str
    present: int
    missing: int
    damaged: int
    held: int
    full: int
    memory_bytes: int

    @property
    def total(self) -> int:
        return self.present + self.missing


class SnapshotStore(Protocol):
    """The catalogue's snapshot records (what libvirt keeps, plus who, why and holds)."""

    async def snapshots(self, vm_uuid: str | None = None) -> list[Snapshot]: ...

    async def snapshot_counts(self) -> dict[str, int]:
        """How many ``PRESENT`` records each VM (by UUID) has; VMs with none are left out.
        Counted by the database: a listing of VMs must not load every record (issue 12)."""
        ...

    async def snapshot_tallies(self) -> dict[str, SnapshotTally]:
        """Each VM's (by UUID) records summed up by the database (the Home tab's overview);
        VMs without records are left out."""
        ...

    async def newest_snapshots(
        self, vm_uuids: Collection[str], per_vm: int
    ) -> dict[str, list[Snapshot]]:
        """The ``per_vm`` newest records of each of ``vm_uuids``, newest first (equal times:
        the one recorded later first); VMs without records are left out."""
        ...

    async def add_snapshot(self, snapshot: Snapshot) -> None: ...

    async def relabel_snapshot(self, vm_uuid: str, libvirt_name: str, label: str) -> None: ...

    async def set_snapshot_status(
        self, vm_uuid: str, libvirt_name: str, status: CatalogueStatus
    ) -> None: ...

    async def set_memory_bytes(self, vm_uuid: str, libvirt_name: str, size: int | None) -> None: ...

    async def remove_snapshot(self, vm_uuid: str, libvirt_name: str) -> None: ...

    async def set_backup_damage(self, vm_uuid: str, libvirt_name: str, damage: str | None) -> None:
        """Record what the last verification of a restore point found damaged (None: it
        verified clean)."""
        ...

    async def archive_snapshot(
        self,
        vm_uuid: str,
        libvirt_name: str,
        *,
        point_id: str,
        logical_bytes: int,
        added_bytes: int,
    ) -> None:
        """The full snapshot's disk state is now the backup store's point ``point_id``: its
        record becomes ARCHIVED, without memory, keeping its name, label, holds, creator and
        origin. A record that is not FULL (already archived) is left as it is."""
        ...

    async def claim_host(self, vm_uuid: str, host_uuid: str, hypervisor_uri: str) -> None:
        """The VM is listed on this host: its records belong here (records made before snapbot
        kept the host, or under a host id that changed, as libvirt's does on hosts without an
        SMBIOS UUID when the daemon restarts)."""
        ...


@dataclass(frozen=True, slots=True)
class RunningOperation:
    """An operation still marked running, with its lock's owner and last heartbeat."""

    operation: Operation
    owner: str
    heartbeat_at: datetime


class OperationStore(DatabaseClock, Protocol):
    """The audit trail of operations and the per-VM locks they (and catalogue syncs) take."""

    async def begin_operation(self, operation: Operation, owner: str) -> None:
        """Record ``operation`` as running and take its VM's lock, atomically (with its
        ``stage`` and ``details`` as given: the first stage costs no write of its own).

        Raise ``VmBusy`` (and record nothing) when another operation holds the VM.
        """
        ...

    async def lock_for_sync(self, vm_uuid: str, owner: str) -> str | None:
        """Take the VM's lock for a catalogue sync (no operation record); return its token,
        or None when an operation or another sync holds the VM. An operation that starts
        meanwhile waits briefly for the sync instead of being refused."""
        ...

    async def unlock_sync(self, token: str) -> None: ...

    async def record_finished(self, operation: Operation) -> None:
        """Record a request that ended without holding a VM's lock: refused before it took
        one, or one that only coordinated others (a confirmed prune's summary)."""
        ...

    async def set_stage(self, operation_id: str, stage: Stage) -> None: ...

    async def update_details(self, operation_id: str, details: Mapping[str, object]) -> None: ...

    async def record_progress(
        self,
        operation_id: str,
        *,
        stage: Stage | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Write a running operation's stage and/or details in one commit (what a crash
        recovery needs is durable when this returns). ``details`` are all of the operation's
        details and replace the stored ones, so nothing is read first: only the operation's
        own handle writes them while it runs, and it keeps them whole."""
        ...

    async def end_operation(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
        details: Mapping[str, object] | None = None,
        made: Snapshot | None = None,
    ) -> bool:
        """``finish_operation`` for the operation's own process, in one transaction and
        without reading the record back: also store ``details`` (all of them, as
        ``record_progress``) and add ``made``, the record of the snapshot the operation made.
        False, and nothing written, when the record was no longer running (a takeover ended
        it, and its reconciliation filed what the operation made)."""
        ...

    async def heartbeat(self, operation_id: str) -> None: ...

    async def finish_operation(
        self,
        operation_id: str,
        status: OperationStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> Operation:
        """Mark the operation terminal and release its VM's lock."""
        ...

    async def take_over(self, operation_id: str, from_owner: str, to_owner: str) -> bool:
        """Make ``to_owner`` the holder of a lock ``from_owner`` left; False when another
        process took it over first (so two replicas never reconcile the same operation)."""
        ...

    async def running_operations(self) -> list[RunningOperation]: ...

    async def operations(self, vm_uuid: str | None = None, limit: int = 50) -> list[Operation]: ...


class ConfirmationStore(Protocol):
    """Pending confirmations of destructive requests, each claimable once."""

    async def add_confirmation(self, confirmation: Confirmation) -> None: ...

    async def claim_confirmation(self, confirmation_id: str, user: str) -> Confirmation:
        """Mark the confirmation used by ``user`` and return it, exactly once. Raise
        ``ConfirmationSpent`` when it is unknown, expired, already used, or not ``user``'s."""
        ...

    async def get_confirmation(self, confirmation_id: str) -> Confirmation | None: ...


class Catalogue(SnapshotStore, OperationStore, ConfirmationStore, Protocol):
    """Snapshot metadata, the audit trail of operations, the per-VM locks, confirmations."""


# --- observing operations (metrics) --------------------------------------------------------------


class OperationObserver(Protocol):
    """Told how each operation went, for metrics. Called inline by ``OperationRunner``: it must
    be quick and must not raise."""

    def stage_finished(self, operation: Operation, stage: Stage, seconds: float) -> None: ...

    def operation_finished(self, operation: Operation, seconds: float) -> None:
        """``operation`` as it ended: its terminal status, outcome or error."""
        ...


class SchedulerObserver(Protocol):
    """Told, for metrics, how late each scheduled slot ran and how many were missed."""

    def slot_settled(self, lag_seconds: float | None, missed: int) -> None:
        """``lag_seconds`` is None when no slot ran (only missed ones were settled)."""
        ...


# --- holds ---------------------------------------------------------------------------------------


class HoldStore(Protocol):
    async def snapshots(self, vm_uuid: str | None = None) -> list[Snapshot]: ...

    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None: ...


class HoldCatalogue(Catalogue, Protocol):
    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None: ...


# --- schedules, their runs, and the scheduler's leadership ---------------------------------------


class ScheduleCatalogue(Protocol):
    async def add_schedule(self, schedule: Schedule) -> Schedule:
        """Store a new schedule and return it with its id; ``InvalidInput`` when the name is
        taken."""
        ...

    async def schedules(self) -> list[Schedule]: ...

    async def remove_schedule(self, schedule_id: int) -> bool: ...

    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None: ...


class RunStore(Protocol):
    """The part of the catalogue runs need."""

    async def begin_run(self, schedule_id: int, fire_time: datetime, owner: str) -> int | None:
        """Claim a schedule's slot; None when another run (of any process) has it."""
        ...

    async def finish_run(self, run_id: int, status: str, report: dict[str, object]) -> None: ...

    async def schedules(self) -> list[Schedule]: ...

    async def runs(self, schedule_id: int | None = None) -> list[tuple[int, datetime, str]]: ...


class LeaseStore(Protocol):
    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> int | None:
        """Take or renew the lease; return its fencing token, or None if another holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...


class ScheduleStore(LeaseStore, Protocol):
    async def schedules(self) -> list[Schedule]: ...

    async def set_last_fire(self, schedule_id: int, fire_time: datetime) -> None:
        """Move the schedule's last fire mark forwards (never back)."""
        ...

    async def running_run(self, schedule_id: int) -> datetime | None:
        """The fire time of this schedule's run still in progress, if any."""
        ...

    async def runs(self, schedule_id: int | None = None) -> list[tuple[int, datetime, str]]: ...

    async def interrupt_runs(self, owner: str) -> int:
        """Mark runs other owners left running as interrupted; return how many."""
        ...


class Timetable(Protocol):
    """When a schedule's times fall (the scheduler's calendar, apscheduler's cron rules)."""

    def check(self, when: When) -> None:
        """Raise ``InvalidInput`` for times that can never fire (an impossible cron field)."""
        ...

    def next_fire(self, when: When, after: datetime) -> datetime | None: ...


class ScheduleRunNow(Protocol):
    """``/snapshot schedule run``: run a schedule's slot now, outside its timetable, and
    report it where the schedule reports (None: the slot is being run already)."""

    async def run_now(self, schedule: Schedule) -> RunReport | None: ...


# --- backup store: restore points outside the VM's images ---------------------------------------


class BackupStore(Protocol):
    """Deduplicated restore points (``core.domain.backups``): each logically full, each chunk
    of data stored once. Holds everything a restore needs, so a new process pointed at the same
    place lists and reads every point. Damage raises ``BackupDamaged``; an unknown point
    ``RestorePointNotFound``."""

    async def write_point(self, source: BackupSource) -> Manifest:
        """Stores the source's disks, storing only chunks the store does not hold yet. The
        point exists only once complete: a write that fails leaves no part of one."""
        ...

    async def list_points(self, vm_uuid: str | None = None) -> list[Manifest]:
        """Finished points, newest first (of one VM, or all)."""
        ...

    async def point_ids(self, vm_uuid: str) -> set[str]:
        """Ids of the VM's finished points (cheap: no manifest is read), so a sync reads only
        the manifests of points it does not know yet."""
        ...

    async def stored_vms(self) -> list[str]:
        """UUIDs of the VMs the store holds points of (cheap: no manifest is read)."""
        ...

    async def manifest(self, ref: PointRef) -> Manifest: ...

    async def restore_disk(self, ref: PointRef, target: str, writer: DiskWriter) -> int:
        """Writes the disk's exact content through ``writer`` (zeros where the point has
        none, so old data never shows through); returns the bytes of data written. Every
        chunk is checked against its digest first: a damaged point raises ``BackupDamaged``
        before anything is written."""
        ...

    async def read_blob(self, ref: PointRef, name: str) -> bytes: ...

    async def delete_point(self, ref: PointRef) -> None:
        """Removes the point; no other point loses anything (space returns at GC)."""
        ...

    async def collect_garbage(self) -> GcReport:
        """Removes chunks no point needs, sparing any a running writer or reader may need."""
        ...

    async def verify(self, point: PointRef | None = None) -> VerifyReport:
        """Re-reads and re-hashes every chunk the point (or every point) needs."""
        ...

    async def usage(self) -> StoreUsage:
        """What the store takes: logical and stored sizes, what deduplication and compression
        saved, chunks no point uses any more, and its filesystem's free space."""
        ...

    async def exclusive_bytes(self, refs: Collection[PointRef]) -> int:
        """Stored bytes of the chunks only ``refs`` use (no other point): exactly what
        deleting those points frees at the next garbage collection."""
        ...


class OffsiteStore(Protocol):
    """The backup store's second copy in object storage (``core.domain.offsite``): copied
    from the local store, checked on its own, deletions applied only after a delay."""

    where: str
    delete_after: timedelta

    async def copy_new(self) -> CopyReport:
        """Uploads the points (and the pieces they need) the copy lacks; safe to interrupt and
        run again: nothing is uploaded twice, no point exists offsite before all it needs."""
        ...

    async def verify_copy(self, point: PointRef | None = None) -> VerifyReport:
        """Downloads and re-checks every piece the copy's points (or ``point``) need."""
        ...

    async def apply_deletions(self, now: datetime) -> DeletionReport:
        """Marks points gone from the local store, deletes those marked ``delete_after`` ago
        and the pieces nothing needs any more."""
        ...

    async def fetch_point(self, ref: PointRef) -> Manifest:
        """Writes a point kept offsite back into the local store (undoing a mistaken delete
        while its offsite deletion waits); the store then lists it again."""
        ...

    async def status(self) -> OffsiteStatus: ...


class DiskAccess(Protocol):
    """VMs' disks as raw bytes, for the backup store: read at one instant, written back in
    place, or written as a VM defined anew. Works where snapbot runs on the VM's host (the
    images and NBD sockets are local); elsewhere it raises ``HypervisorError`` saying so."""

    def backup_view(self, vm: Vm) -> AbstractAsyncContextManager[DiskExport]:
        """The VM's disks at one instant, readable while the block runs. A running VM keeps
        running (a backup job's point-in-time view; its filesystems frozen through the guest
        agent for the instant the job starts, where one answers); a shut-off VM's images are
        read directly and it cannot be started until the block ends."""
        ...

    def snapshot_view(self, vm: Vm, libvirt_name: str) -> AbstractAsyncContextManager[DiskExport]:
        """The disk state of the VM's internal snapshot ``libvirt_name`` and the configuration
        it was taken with (its memory state is not part of it)."""
        ...

    def restore_in_place(
        self, vm: Vm, sizes: Mapping[str, int]
    ) -> AbstractAsyncContextManager[RestoreTarget]:
        """The shut-off VM's own disks, writable, each first resized to ``sizes[target]``.
        Writes go into the images' current state: their internal snapshots stay. Raises
        before changing anything when a target is not one of the VM's disks."""
        ...

    def restore_as_new(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        *,
        new_name: str | None,
        blobs: Mapping[str, bytes],
    ) -> AbstractAsyncContextManager[RestoreTarget]:
        """New disk images for a VM defined from ``domain_xml``. With ``new_name``: a copy
        beside the original (new name, UUID, MAC addresses, and disk paths next to the
        original ones). Without: the original VM again (its name, UUID and disk paths),
        refused when a VM with that name or UUID exists or a file is in a disk's way. The VM is
        defined, shut off, when the block ends without an error; otherwise every file the
        block created is removed and nothing is defined."""
        ...

    async def end_leftover_job(self, vm: Vm) -> bool | None:
        """End a backup job snapbot started on the VM and a process that died left running
        (libvirt keeps it, and its scratch file, until someone ends it). True when one was
        ended, False when there was none of snapbot's, None when it cannot tell. A backup job
        of another tool is never touched."""
        ...


# --- restore drills: a restore point booted as an isolated throwaway VM --------------------------


@dataclass(frozen=True, slots=True)
class DrillGuest:
    """What a VM's configuration offers a drill: a guest agent channel to ask, a display to
    take a screenshot of."""

    has_agent: bool
    has_display: bool


class ThrowawayVm(Protocol):
    """An isolated copy of a restore point (``DrillLab.throwaway_vm``): its own new disks in a
    private directory, a new name and UUID, no network, its serial console in a file."""

    @property
    def name(self) -> str: ...

    @property
    def disks(self) -> Mapping[str, DiskWriter]:
        """The new disks, writable by target until ``start``."""
        ...

    async def start(self) -> None:
        """Close the disks' writers and boot the VM (never autostarted, never persistent)."""
        ...

    async def wait_ready(self, signal: ReadySignal, within: float) -> float:
        """Seconds from ``start`` until ``signal`` said the VM is ready; raise ``DrillFailed``
        saying what was seen instead (the VM stopped, the agent never answered, the console's
        last lines) when it is not within ``within`` seconds."""
        ...

    async def screenshot(self) -> bytes | None:
        """The VM's display as PNG; None when it has no display or it cannot be captured."""
        ...


class DrillLab(Protocol):
    """Where drills boot restore points, apart from everything else on the host."""

    def inspect(self, domain_xml: str) -> DrillGuest: ...

    def throwaway_vm(
        self,
        domain_xml: str,
        sizes: Mapping[str, int],
        blobs: Mapping[str, bytes],
        *,
        name: str,
    ) -> AbstractAsyncContextManager[ThrowawayVm]:
        """A throwaway VM built from ``domain_xml`` with empty disks of ``sizes``. When the
        block ends, whatever happened in it, the VM is destroyed and every file it had is
        removed."""
        ...

    async def sweep_leftovers(self, older_than: timedelta) -> list[str]:
        """Remove throwaway VMs (and their files) a snapbot that died left behind, started
        more than ``older_than`` ago; only those carrying snapbot's drill mark. Their names."""
        ...


class DrillStore(Protocol):
    """The catalogue's record of drills."""

    async def begin_drill(self, drill: Drill, *, stale_after: timedelta) -> bool:
        """Record a RUNNING drill; False (nothing recorded) when a drill of the same VM is
        running and started less than ``stale_after`` ago."""
        ...

    async def finish_drill(self, drill: Drill) -> None:
        """Store the drill's end: result, when, how long until ready, error, screenshot."""
        ...

    async def drills(self, vm_uuid: str | None = None, limit: int = 50) -> list[Drill]:
        """Newest first, without their screenshots (``drill_screenshot`` reads one)."""
        ...

    async def drill_screenshot(self, drill_id: str) -> bytes | None: ...

    async def last_passed_drills(self) -> dict[str, Drill]:
        """The newest passing drill of each VM, by VM UUID (without screenshots)."""
        ...

    async def abandon_drills(self, started_before: datetime, error: str) -> int:
        """Mark drills still RUNNING that started before ``started_before`` FAILED with
        ``error`` (their process died); how many."""
        ...


# --- storage usage: daily samples and the chart ------------------------------------------------


class UsageStore(Protocol):
    """The catalogue's daily usage samples (``core.domain.usage``)."""

    async def record_usage(self, samples: Sequence[UsageSample]) -> None:
        """Store the samples; one of the same day, kind and subject as a stored one replaces
        it (sampling twice a day keeps the later)."""
        ...

    async def usage_samples(
        self, since: date, kind: SampleKind | None = None, subject: str | None = None
    ) -> list[UsageSample]:
        """Samples from ``since`` on (inclusive), oldest first."""
        ...

    async def forget_usage_before(self, day: date) -> int:
        """Remove samples older than ``day``; how many."""
        ...


class ChartRenderer(Protocol):
    """Draws the usage history as an image."""

    def render_usage(self, history: UsageHistory, forecasts: Sequence[Forecast]) -> bytes:
        """A PNG: each VM's and the total bytes over the history's days, and each
        filesystem's free space with its forecast line. Blocking (CPU): callers run it in a
        thread."""
        ...


# --- front ends: who belongs to which group, who may do what, where reports go -------------------


class Directory(Protocol):
    """Where user-group membership comes from (Slack's ``usergroups.users.list``)."""

    async def members(self, usergroup: str) -> Collection[str]:
        """User ids in the group; raise ``CoreError`` when it cannot be read."""
        ...

    async def home(self) -> tuple[str | None, str | None]:
        """The workspace (team id) and Enterprise Grid organisation (None outside a grid)
        snapbot is installed in; requests from any other (another workspace, a Slack Connect
        user of another organisation) are refused."""
        ...


class Authority(Protocol):
    """Role checks of a front end that serves many people (``AccessService``)."""

    async def allows(self, actor: Actor, action: Action, vm: str | None) -> bool: ...


class Reporter(Protocol):
    """Where the scheduler reports: a Slack channel, or the console."""

    async def run_report(self, report: RunReport) -> None: ...

    async def hold_reminder(self, snapshot: Snapshot) -> None: ...

    async def digest(self, digest: Digest) -> None: ...
