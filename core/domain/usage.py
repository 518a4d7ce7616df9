"""Storage usage as plain values: what each VM and the backup store take, where they take it,
what deleting or pruning would give back, a daily history, and when each filesystem fills.

No I/O here: the numbers come in from the hypervisor, the backup store and the catalogue
(``core.services.usage``); front ends word them (``bot.messages``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

# The catalogue keeps a little over a year of daily samples: enough to compare with the same
# month last year, small enough (a row per VM, store and filesystem a day) never to matter.
HISTORY_DAYS = 400
# The chart and ``UsageService.history`` look back this far unless asked otherwise.
CHART_DAYS = 90
# The forecast fits the rate of the last month: long enough to smooth daily noise, short
# enough to follow a change of habits (a new schedule, a VM that started growing).
FORECAST_WINDOW_DAYS = 30
# Fewer samples than this, or spanning fewer days, give no rate worth acting on.
FORECAST_MIN_SAMPLES = 3
FORECAST_MIN_SPAN_DAYS = 2
# A filesystem forecast to fill within this many days is flagged (and warned about).
FILL_WARNING_DAYS = 14
# Beyond this the date means nothing (and would overflow ``date``): treated as not filling.
FORECAST_HORIZON_DAYS = 3650


# --- the backup store -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreUsage:
    """The backup store as a whole, from its own files.

    ``logical_bytes``: every point's disks at their full size (what restoring all would write).
    ``referenced_bytes``: the same without chunks of zeros (never stored), summed per point.
    ``unique_bytes``: the uncompressed data of the distinct chunks the points use.
    ``stored_bytes``: what the chunk files take on disk, including ``garbage_bytes`` of chunks
    no point uses any more (removed at the next garbage collection).
    """

    where: str
    points: int
    logical_bytes: int
    referenced_bytes: int
    unique_bytes: int
    stored_bytes: int
    garbage_bytes: int
    chunks: int
    free_bytes: int | None
    total_bytes: int | None

    @property
    def zeros_skipped_bytes(self) -> int:
        return max(0, self.logical_bytes - self.referenced_bytes)

    @property
    def dedup_saved_bytes(self) -> int:
        """Bytes not stored because another point (or another place of a disk) had them."""
        return max(0, self.referenced_bytes - self.unique_bytes)

    @property
    def compression_saved_bytes(self) -> int:
        """Bytes compression saved on the chunks the points use (headers count against it)."""
        return max(0, self.unique_bytes - (self.stored_bytes - self.garbage_bytes))

    @property
    def saved_bytes(self) -> int:
        """Everything not on disk that a plain copy of each point would take."""
        return max(0, self.logical_bytes - (self.stored_bytes - self.garbage_bytes))


@dataclass(frozen=True, slots=True)
class VmBackupUsage:
    """One VM's restore points in the store."""

    points: int = 0
    # Their disks at full size, summed per point.
    logical_bytes: int = 0
    # What each point added to the store when written (on disk, compressed), summed.
    added_bytes: int = 0
    # Stored bytes of chunks no other VM's point uses: what deleting all of them would free.
    exclusive_bytes: int = 0


# --- the hypervisor side --------------------------------------------------------------------


class PlaceRole(enum.Enum):
    """Why a filesystem is in the report."""

    VM_DISKS = "vm disks"
    BACKUP_STORE = "backup store"


@dataclass(frozen=True, slots=True)
class FilesystemUsage:
    """A filesystem or pool involved: where VMs' snapshots go, or where the store is.
    ``free_bytes`` None when it cannot be known here (``unknown_because`` says why);
    ``total_bytes`` None where only the free space is known (libvirt's places)."""

    where: str
    role: PlaceRole
    free_bytes: int | None
    total_bytes: int | None = None
    unknown_because: str | None = None
    # Names of the VMs whose disks are there (empty for the store).
    vms: tuple[str, ...] = ()

    @property
    def used_bytes(self) -> int | None:
        if self.total_bytes is None or self.free_bytes is None:
            return None
        return max(0, self.total_bytes - self.free_bytes)


@dataclass(frozen=True, slots=True)
class VmUsage:
    """One VM: its images on the host, the memory states inside them, its restore points."""

    vm_uuid: str
    vm_name: str
    # Bytes its writable images occupy on the host, internal snapshots included (None: libvirt
    # could not say).
    disk_bytes: int | None
    # Memory states of its full snapshots (inside the images: part of ``disk_bytes``).
    memory_state_bytes: int
    full_snapshots: int
    backup: VmBackupUsage
    places: tuple[str, ...] = ()

    @property
    def host_bytes(self) -> int:
        return self.disk_bytes or 0


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Storage usage of one host (every VM) or of one VM on it."""

    host: str
    taken_at: datetime
    vms: tuple[VmUsage, ...]
    # None when no backup store is configured.
    store: StoreUsage | None
    filesystems: tuple[FilesystemUsage, ...]
    forecasts: tuple[Forecast, ...] = ()
    # Set when the report is about one VM (its name).
    vm: str | None = None

    @property
    def disk_bytes(self) -> int:
        return sum(v.host_bytes for v in self.vms)

    @property
    def memory_state_bytes(self) -> int:
        return sum(v.memory_state_bytes for v in self.vms)

    @property
    def filling(self) -> tuple[Forecast, ...]:
        """The forecasts flagged: filling within ``FILL_WARNING_DAYS``."""
        return tuple(f for f in self.forecasts if f.soon)


# --- what deleting or pruning frees ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReclaimEstimate:
    """What deleting a set of snapshots would give back.

    ``memory_bytes`` and ``store_bytes`` are exact (memory states are whole files' worth of
    clusters inside the image; chunks only these points use go at the next garbage collection).
    ``disk_estimate_bytes`` is an estimate: which clusters of an image only an internal
    snapshot holds is not something libvirt or QEMU report.
    """

    snapshots: int
    memory_bytes: int = 0
    store_bytes: int = 0
    disk_estimate_bytes: int = 0
    # Memory states whose size the catalogue does not know (counted as 0 above).
    memory_unknown: int = 0

    @property
    def exact_bytes(self) -> int:
        return self.memory_bytes + self.store_bytes

    @property
    def total_bytes(self) -> int:
        return self.exact_bytes + self.disk_estimate_bytes

    @property
    def is_estimate(self) -> bool:
        return self.disk_estimate_bytes > 0 or self.memory_unknown > 0


def internal_disk_estimate(
    disk_bytes: int | None, memory_state_bytes: int, internal_snapshots: int, deleted: int
) -> int:
    """Disk data freed by deleting ``deleted`` of a VM's ``internal_snapshots``, estimated.

    The image's allocation beyond its memory states is taken to be shared out evenly between
    its snapshots and its current state: each snapshot is assumed to hold alone an equal share.
    An image that changes little between snapshots frees less, one rewritten each time more.
    """
    if disk_bytes is None or internal_snapshots <= 0 or deleted <= 0:
        return 0
    disk_only = max(0, disk_bytes - memory_state_bytes)
    share = disk_only // (internal_snapshots + 1)
    return share * min(deleted, internal_snapshots)


# --- history --------------------------------------------------------------------------------


class SampleKind(enum.Enum):
    """What a daily sample measures."""

    VM = "vm"
    STORE = "store"
    FILESYSTEM = "filesystem"


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One day's measurement of one VM, the store, or one filesystem. ``subject`` identifies it
    (a VM's UUID, the store's or filesystem's path); ``name`` is what to show (a VM's name).

    A VM: ``disk_bytes`` (image allocation), ``memory_bytes`` (memory states),
    ``backup_bytes`` (what its points added to the store), ``logical_bytes`` (its points'
    logical size). The store: ``backup_bytes`` stored, ``logical_bytes`` logical, and its
    filesystem's ``used_bytes``/``free_bytes``. A filesystem: ``used_bytes`` (None when only the
    free space is known) and ``free_bytes``."""

    day: date
    kind: SampleKind
    subject: str
    name: str
    disk_bytes: int | None = None
    memory_bytes: int | None = None
    backup_bytes: int | None = None
    logical_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None

    @property
    def key(self) -> tuple[date, SampleKind, str]:
        """Unique per day: a second sample the same day replaces the first."""
        return (self.day, self.kind, self.subject)

    @property
    def total_bytes(self) -> int:
        """What the subject takes: a VM's images and restore points, the store's files."""
        if self.kind is SampleKind.FILESYSTEM:
            return self.used_bytes or 0
        return (self.disk_bytes or 0) + (self.backup_bytes or 0)


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: a label and (day, bytes) points, oldest first."""

    label: str
    points: tuple[tuple[date, int], ...]


@dataclass(frozen=True, slots=True)
class UsageHistory:
    """Daily samples from ``start`` to ``end`` (inclusive), as chart-ready series: per VM (its
    images and restore points), the store, the total of those, and each filesystem's free
    space."""

    start: date
    end: date
    vms: tuple[Series, ...]
    store: Series | None
    total: Series
    free: tuple[Series, ...]
    samples: tuple[UsageSample, ...] = field(default=(), repr=False)


def build_history(samples: Iterable[UsageSample], start: date, end: date) -> UsageHistory:
    """Series from samples (any order; a duplicate day of a subject keeps the last seen)."""
    kept: dict[tuple[date, SampleKind, str], UsageSample] = {}
    for sample in samples:
        if start <= sample.day <= end:
            kept[sample.key] = sample
    ordered = sorted(kept.values(), key=lambda s: (s.day, s.kind.value, s.subject))

    def series_of(kind: SampleKind, value: str) -> list[Series]:
        names: dict[str, str] = {}
        points: dict[str, list[tuple[date, int]]] = {}
        for s in ordered:
            if s.kind is not kind:
                continue
            number = s.total_bytes if value == "total" else s.free_bytes
            if number is None:
                continue
            names[s.subject] = s.name  # the newest name a VM had
            points.setdefault(s.subject, []).append((s.day, number))
        return sorted(
            (Series(names[k], tuple(v)) for k, v in points.items()), key=lambda x: x.label
        )

    vms = series_of(SampleKind.VM, "total")
    stores = series_of(SampleKind.STORE, "total")
    # The total counts each byte once: the VMs' images, plus the store's files where it was
    # sampled (a VM's restore points are part of those), else the VMs' share of the store.
    by_day: dict[date, int] = {}
    stored_on = {s.day for s in ordered if s.kind is SampleKind.STORE}
    for s in ordered:
        if s.kind is SampleKind.FILESYSTEM:
            continue
        if s.kind is SampleKind.VM:
            number = (s.disk_bytes or 0) + (0 if s.day in stored_on else s.backup_bytes or 0)
        else:
            number = s.backup_bytes or 0
        by_day[s.day] = by_day.get(s.day, 0) + number
    free = series_of(SampleKind.FILESYSTEM, "free")
    store_free = series_of(SampleKind.STORE, "free")
    return UsageHistory(
        start=start,
        end=end,
        vms=tuple(vms),
        store=stores[0] if stores else None,
        total=Series("total", tuple(sorted(by_day.items()))),
        free=tuple(sorted([*free, *store_free], key=lambda x: x.label)),
        samples=tuple(ordered),
    )


# --- forecast -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forecast:
    """When a filesystem fills at its recent rate.

    ``bytes_per_day`` is how fast free space shrinks (negative: it grows). ``fills_on`` is None
    when it is not shrinking, or too slowly to matter (beyond ``FORECAST_HORIZON_DAYS``), or
    the history is too short to say (``enough_history`` False)."""

    where: str
    free_bytes: int | None
    bytes_per_day: float
    fills_on: date | None
    days_left: float | None
    samples: int
    enough_history: bool
    # The fitted line's free bytes on ``today`` (where the chart's forecast line starts).
    fitted_free_today: float | None = None
    today: date | None = None

    @property
    def soon(self) -> bool:
        return self.days_left is not None and self.days_left <= FILL_WARNING_DAYS


def forecast_fill(
    where: str,
    free_history: Sequence[tuple[date, int]],
    today: date,
    *,
    window_days: int = FORECAST_WINDOW_DAYS,
) -> Forecast:
    """Fit the free space of the last ``window_days`` (least squares over days) and tell when
    it reaches zero. A flat or growing free space never fills; a history of fewer than
    ``FORECAST_MIN_SAMPLES`` days, or spanning fewer than ``FORECAST_MIN_SPAN_DAYS``, gives
    no forecast rather than a wild one."""
    by_day: dict[date, int] = {}
    for day, free in free_history:
        if day <= today:
            by_day[day] = free
    latest = by_day[max(by_day)] if by_day else None
    recent = sorted((d, f) for d, f in by_day.items() if (today - d).days < window_days)
    span = (recent[-1][0] - recent[0][0]).days if recent else 0
    if len(recent) < FORECAST_MIN_SAMPLES or span < FORECAST_MIN_SPAN_DAYS:
        return Forecast(where, latest, 0.0, None, None, len(recent), False, None, today)
    xs = [float((d - today).days) for d, _ in recent]
    ys = [float(f) for _, f in recent]
    slope, intercept = _least_squares(xs, ys)
    shrink = -slope
    if shrink <= 0 or intercept <= 0:
        # Not shrinking; or the fitted line says it is full already, which the latest sample
        # speaks to better than a line does.
        days_left = 0.0 if intercept <= 0 < shrink else None
        fills = today if days_left == 0.0 else None
        return Forecast(
            where, latest, shrink, fills, days_left, len(recent), True, intercept, today
        )
    days_left = intercept / shrink
    if days_left > FORECAST_HORIZON_DAYS or not math.isfinite(days_left):
        return Forecast(where, latest, shrink, None, None, len(recent), True, intercept, today)
    fills_on = today + timedelta(days=math.floor(days_left))
    return Forecast(where, latest, shrink, fills_on, days_left, len(recent), True, intercept, today)


def _least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope and intercept (at x = 0) of the least-squares line; slope 0 for one x value."""
    n = len(xs)
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, mean_y
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def forecasts_from(history: UsageHistory, today: date) -> tuple[Forecast, ...]:
    """A forecast for each filesystem (and the store's) in the history."""
    return tuple(forecast_fill(line.label, line.points, today) for line in history.free)


def memory_state_total(sizes: Mapping[str, int | None]) -> tuple[int, int]:
    """Sum of known memory-state sizes, and how many are unknown."""
    known = [s for s in sizes.values() if s is not None]
    return sum(known), len(sizes) - len(known)
