"""The offsite copy of the backup store: what a copy, a verification, a deletion pass and a
status look at. Pure: the bucket and its client live in ``core.adapters.offsite``.

The copy mirrors the store (chunks by SHA-256, points by VM UUID and point id). A point exists
offsite only when its manifest does, exactly as in the store itself. A point deleted from the
store is first *marked* offsite and only removed after a delay, so a mistaken prune can still be
restored from the copy until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.domain.backups import PointRef
from core.errors import CoreError

DEFAULT_DELETE_AFTER_DAYS = 14


class OffsiteUnavailable(CoreError):
    """The object storage did not answer, refused the credentials, or has no such bucket."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"the offsite copy at {where} cannot be used: {detail}")
        self.where = where
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CopyReport:
    """One copy of the store's new pieces and points to the bucket."""

    points_copied: tuple[PointRef, ...]
    chunks_uploaded: int
    bytes_uploaded: int
    # Points that were there already (nothing uploaded for them).
    points_present: int
    # Points not copied because the local store's data for them is damaged or vanished
    # (being deleted); each with why. They are tried again at the next copy.
    points_skipped: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class MarkedPoint:
    """A point deleted from the store and still kept offsite until ``delete_at``."""

    ref: PointRef
    vm_name: str
    label: str
    marked_at: datetime
    delete_at: datetime


@dataclass(frozen=True, slots=True)
class DeletionReport:
    """One pass of delayed deletion."""

    newly_marked: tuple[PointRef, ...]
    # Marks removed because the point is back in the store (restored by hand or re-copied).
    unmarked: tuple[PointRef, ...]
    deleted: tuple[PointRef, ...]
    chunks_deleted: int
    bytes_freed: int
    # Why nothing was marked although points are missing from the store (None: it was).
    held_back: str | None = None


@dataclass(frozen=True, slots=True)
class OffsiteStatus:
    """What is copied and what is pending."""

    where: str
    local_points: int
    offsite_points: int
    # In the store but not offsite yet: copied at the next copy.
    pending: tuple[PointRef, ...]
    marked: tuple[MarkedPoint, ...]
    chunks: int
    stored_bytes: int
    delete_after: timedelta


def delete_at(marked_at: datetime, delay: timedelta) -> datetime:
    return marked_at + delay


def due(marked_at: datetime, delay: timedelta, now: datetime) -> bool:
    """Whether a point marked at ``marked_at`` may really be deleted now."""
    return now >= delete_at(marked_at, delay)


@dataclass(frozen=True, slots=True)
class OffsiteView:
    """The copy's status with what this snapbot last did to it."""

    status: OffsiteStatus
    last_copy: CopyReport | None
    last_copy_at: datetime | None
    # Why the last copy or deletion pass failed (None: it did not).
    last_error: str | None
    copying: bool
