"""What a schedule's run and the daily overview report: plain values the scheduler builds and
every front end renders (``Reporter`` in ``core.ports``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from core.domain.hosts import HostHealth
from core.domain.schedule import Schedule
from core.domain.vm import FreeSpace
from core.errors import CoreError

if TYPE_CHECKING:
    # Types only: ``core.ports`` names these values, and the services import the ports, so a
    # run-time import here would be circular.
    from core.services.backups import BackupResult, VerifyResult
    from core.services.drills import DrillOutcome
    from core.services.pruning import VmPruneResult


@dataclass(slots=True)
class VmOutcome:
    """What a run did to one VM. ``error`` is set for failures and skips. ``vm`` is its name
    as typed (``hv1/web-01`` where snapbot serves several hosts), ``host`` its host's name."""

    vm: str
    label: str | None = None
    seconds: float = 0.0
    memory_bytes: int | None = None
    skipped: bool = False
    error: CoreError | None = None
    vm_state: str | None = None
    prune: VmPruneResult | None = None
    prune_error: CoreError | None = None
    # Why each pruned snapshot went (label -> the engine's reason).
    prune_reasons: dict[str, str] = field(default_factory=dict)
    # An incremental schedule's backup: bytes read and new, consistency.
    backup: BackupResult | None = None
    # A verification schedule's result for this VM.
    verify: VerifyResult | None = None
    # A drill schedule's drill of this VM (passed or failed; ``error`` is set when it failed).
    drill: DrillOutcome | None = None
    host: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Freshness:
    vm: str
    age: timedelta | None  # None: the VM has no snapshot at all
    critical: bool


@dataclass(slots=True)
class RunReport:
    schedule: Schedule
    fire_time: datetime | None
    catch_up: bool = False
    missed: tuple[datetime, ...] = ()
    outcomes: list[VmOutcome] = field(default_factory=list)
    seconds: float = 0.0
    disk_bytes: int = 0
    free: FreeSpace | None = None
    stale: list[Freshness] = field(default_factory=list)
    no_vms: bool = False
    # Where snapbot serves several hosts: their names in configured order (outcomes are
    # grouped by them), and those the schedule may cover that could not be reached (their VMs
    # were not worked on; empty with one host).
    hosts: tuple[str, ...] = ()
    unreachable: list[HostHealth] = field(default_factory=list)
    # Several hosts: each host's disk images and free space (one reading per host).
    disk_by_host: dict[str, int] = field(default_factory=dict)
    free_by_host: dict[str, FreeSpace] = field(default_factory=dict)

    @property
    def failed(self) -> list[VmOutcome]:
        return [o for o in self.outcomes if o.error is not None and not o.skipped]

    @property
    def status(self) -> str:
        if self.fire_time is None:
            return "missed"
        # A host that could not be reached left its VMs without their snapshots.
        return "failed" if self.failed or self.unreachable else "succeeded"

    def by_host(self) -> list[tuple[str | None, list[VmOutcome]]]:
        """The outcomes per host, hosts in configured order (a host without outcomes is left
        out); with one host, one group of every outcome."""
        if not self.hosts:
            return [(None, list(self.outcomes))]
        groups = [(h, [o for o in self.outcomes if o.host == h]) for h in self.hosts]
        rest = [o for o in self.outcomes if o.host not in self.hosts]
        return [(h, g) for h, g in groups if g] + ([(None, rest)] if rest else [])

    def summary(self) -> dict[str, object]:
        """What the run row keeps (the audit of scheduled work)."""
        return {
            "catch_up": self.catch_up,
            "missed": [m.isoformat() for m in self.missed],
            "vms": {
                o.vm: {
                    "label": o.label,
                    "seconds": round(o.seconds, 3),
                    "skipped": o.skipped,
                    "error": str(o.error) if o.error else None,
                    "pruned": [d.snapshot.label for d in o.prune.deleted] if o.prune else [],
                    "held_since_plan": [h.label for h in o.prune.held] if o.prune else [],
                    "freed_bytes": o.prune.freed_bytes if o.prune else 0,
                    "archived": [a.snapshot.label for a in o.prune.archived] if o.prune else [],
                    "bytes_read": o.backup.figures.bytes_read if o.backup else None,
                    "bytes_new": o.backup.figures.bytes_new if o.backup else None,
                    "damaged": [d.label for d in o.verify.damaged] if o.verify else [],
                    "drill": o.drill.drill.result.value if o.drill else None,
                }
                for o in self.outcomes
            },
            **(
                {"unreachable_hosts": {h.name: h.last_error for h in self.unreachable}}
                if self.unreachable
                else {}
            ),
        }


@dataclass(frozen=True, slots=True)
class DigestLine:
    vm: str
    snapshots: int
    held: int
    newest_age: timedelta | None
    disk_bytes: int | None
    stale: Freshness | None


@dataclass(frozen=True, slots=True)
class Digest:
    """The daily overview: every VM's newest snapshot, holds, storage, and each schedule's
    latest run."""

    channel: str
    lines: tuple[DigestLine, ...]
    schedules: tuple[tuple[Schedule, str | None], ...]  # (schedule, status of its latest run)
    free: FreeSpace | None
    # Several hosts: those that could not be reached (their VMs are not in ``lines``).
    unreachable: tuple[HostHealth, ...] = ()
