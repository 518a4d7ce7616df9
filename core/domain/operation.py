"""Operations: every mutating request, its stages, and who asked for it."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime


class OperationKind(enum.Enum):
    """What an operation does to a VM."""

    SNAPSHOT = "snapshot"
    RESTORE = "restore"
    DELETE = "delete"
    RENAME = "rename"
    PRUNE = "prune"
    HOLD = "hold"
    RELEASE = "release"
    UNLOCK = "unlock"
    # Restore points in the backup store: a backup of the disks, an internal snapshot moved
    # there, a re-read of what is stored.
    BACKUP = "backup"
    ARCHIVE = "archive"
    VERIFY = "verify"
    # Only ever REJECTED: a refused look (a listing) or schedule change, kept for the audit.
    VIEW = "view"
    SCHEDULE = "schedule"
    # A restore point booted as an isolated throwaway VM and removed again; the original VM
    # is only held while a full snapshot's disk state is copied out.
    DRILL = "drill"


class OperationStatus(enum.Enum):
    """Lifecycle of an operation. Every accepted request ends in exactly one terminal status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    RECONCILED = "reconciled"

    @property
    def is_terminal(self) -> bool:
        """True once the operation can no longer change."""
        return self is not OperationStatus.RUNNING


class Stage(enum.Enum):
    """Steps an operation reports as it goes; front ends turn them into progress lines."""

    CHECKING = "checking"
    SAVING_MEMORY_AND_DISK = "saving memory and disk"
    CAPTURING_DISK = "capturing disk"
    VERIFYING = "verifying"
    SAFETY_SNAPSHOT = "safety snapshot"
    STOPPING = "stopping"
    REPLACING_DISK = "replacing disk"
    REPLACING_DISK_AND_MEMORY = "replacing disk and memory"
    STARTING = "starting"
    DELETING = "deleting"
    RECOVERING = "recovering"
    # The backup store's steps: disks read into it, or written back from it.
    READING_DISKS = "reading disks"
    WRITING_DISKS = "writing disks"
    DEFINING = "defining the VM"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked, and through which front end. ``user`` is a stable id (Slack user id, or
    ``console:<login>``); team and channel are kept for the audit trail."""

    user: str
    via: str
    team: str | None = None
    channel: str | None = None
    # the Enterprise Grid organisation the request came from (None outside a grid)
    enterprise: str | None = None


# ``Actor.via`` of scheduled work.
SCHEDULER_VIA = "scheduler"

ProgressCallback = Callable[[Stage], Awaitable[None]]


async def no_progress(stage: Stage) -> None:
    """A progress callback that ignores every stage."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One audited operation."""

    id: str
    kind: OperationKind
    vm_uuid: str
    vm_name: str
    requested_by: str
    via: str
    status: OperationStatus
    started_at: datetime
    finished_at: datetime | None = None
    snapshot_label: str | None = None
    libvirt_name: str | None = None
    stage: Stage | None = None
    error: str | None = None
    outcome: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    channel: str | None = None
    team: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from start to finish, once finished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Recovery(enum.Enum):
    """What snapbot did to leave a VM usable after a failed or interrupted restore."""

    NOTHING_NEEDED = "nothing needed"
    LEFT_SHUT_OFF = "left shut off as before"
    RESUMED = "resumed"
    STARTED = "started from its current disk"
    BACK_TO_SAFETY = "reverted to the safety snapshot"
    FAILED = "recovery failed"
    UNKNOWN = "left as it is: whether the revert completed is unknown"
