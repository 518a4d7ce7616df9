"""Schedules: which VMs, when, what retention, and where to report.

A schedule's time is written the way operators say it (``daily 02:00``, ``weekly sun 03:30``,
``monthly 1 04:00``, or a five-field ``cron "30 2 * * 1-5"``) in a stated time zone, and kept
as cron fields. Computing fire times is the scheduler's business; this module only validates
and describes.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.domain.retention import RetentionPolicy
from core.errors import InvalidInput

ALL_VMS = "all"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A run that starts later than this after its time (the bot was down, the loop was blocked) is
# a miss: reported, and coalesced into one catch-up run only while still inside this window.
DEFAULT_GRACE = timedelta(hours=1)
# What the catalogue's columns hold.
SELECTOR_MAX_LENGTH = 255
CRON_FIELD_MAX_LENGTH = 64
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
WHEN_USAGE = (
    "daily HH:MM | weekly <mon..sun> HH:MM | monthly <1-28> HH:MM | cron '<min> <hour> <day> "
    "<month> <weekday>'"
)


class Cadence(enum.Enum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CRON = "cron"


@dataclass(frozen=True, slots=True)
class When:
    """When a schedule fires, as cron fields in ``timezone``."""

    cadence: Cadence
    minute: str
    hour: str
    day: str = "*"
    month: str = "*"
    day_of_week: str = "*"
    timezone: str = "UTC"

    def describe(self) -> str:
        at = f"{int(self.hour):02d}:{int(self.minute):02d}" if self._simple else ""
        if self.cadence is Cadence.DAILY:
            return f"daily at {at} {self.timezone}"
        if self.cadence is Cadence.WEEKLY:
            return f"weekly on {self.day_of_week} at {at} {self.timezone}"
        if self.cadence is Cadence.MONTHLY:
            return f"monthly on day {self.day} at {at} {self.timezone}"
        cron = f"{self.minute} {self.hour} {self.day} {self.month} {self.day_of_week}"
        return f"cron '{cron}' {self.timezone}"

    @property
    def _simple(self) -> bool:
        return self.minute.isdigit() and self.hour.isdigit()

    @property
    def nominal_interval(self) -> timedelta:
        """How often it promises a snapshot, for freshness alerts (cron: its shortest gap is
        computed by the scheduler; a day is assumed here)."""
        return {
            Cadence.DAILY: timedelta(days=1),
            Cadence.WEEKLY: timedelta(days=7),
            Cadence.MONTHLY: timedelta(days=31),
            Cadence.CRON: timedelta(days=1),
        }[self.cadence]


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"{name!r} is not a time zone; use a name such as UTC or Europe/Berlin"
        ) from None
    return name


def _at(text: str) -> tuple[str, str]:
    match = _TIME.match(text)
    if not match:
        raise InvalidInput(f"{text!r} is not a time of day; write it as HH:MM, e.g. 02:30")
    return str(int(match.group(2))), str(int(match.group(1)))


def parse_when(words: list[str], timezone: str) -> When:
    """``["daily", "02:00"]`` and friends; ``InvalidInput`` names what is wrong."""
    tz = _zone(timezone)
    if not words:
        raise InvalidInput(f"say when the schedule runs: {WHEN_USAGE}")
    head, rest = words[0].lower(), words[1:]
    if head == "daily" and len(rest) == 1:
        minute, hour = _at(rest[0])
        return When(Cadence.DAILY, minute, hour, timezone=tz)
    if head == "weekly" and len(rest) == 2:
        day = rest[0].lower()[:3]
        if day not in DAYS:
            raise InvalidInput(f"{rest[0]!r} is not a weekday; use one of {', '.join(DAYS)}")
        minute, hour = _at(rest[1])
        return When(Cadence.WEEKLY, minute, hour, day_of_week=day, timezone=tz)
    if head == "monthly" and len(rest) == 2:
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
        if not re.fullmatch(r"[0-9]{1,2}", rest[0]) or not 1 <= int(rest[0]) <= 28:
            raise InvalidInput(
                f"{rest[0]!r} is not a day for a monthly schedule; use 1 to 28 (every month "
                "has them)"
            )
        minute, hour = _at(rest[1])
        return When(Cadence.MONTHLY, minute, hour, day=str(int(rest[0])), timezone=tz)
    if head == "cron" and len(rest) == 1:
        fields = rest[0].split()
        if len(fields) != 5:
            raise InvalidInput(
                f"a cron expression has five fields (minute hour day month weekday), "
                f"not {len(fields)}: {rest[0]!r}"
            )
        if any(len(f) > CRON_FIELD_MAX_LENGTH for f in fields):
            raise InvalidInput(
                f"a cron field is longer than {CRON_FIELD_MAX_LENGTH} characters; use ranges "
                "(1-5) and steps (*/15) instead of long lists"
            )
        minute, hour, day, month, dow = fields
        return When(Cadence.CRON, minute, hour, day, month, dow, timezone=tz)
    raise InvalidInput(f"cannot read {' '.join(words)!r} as a time; use {WHEN_USAGE}")


# A host name (or a glob over host names) before the "/" of a VM selector.
_HOST_PATTERN = re.compile(r"^[a-z0-9*?\[\]-]{1,32}$")


def validate_vm_selector(selector: str) -> str:
    """A VM name, a glob such as ``web-*``, or ``all``; either may name its host first
    (``hv1/web-*``, ``hv*/db-01``) where snapbot serves several hosts."""
    host, slash, name = selector.partition("/")
    if (
        not selector
        or any(c.isspace() for c in selector)
        or "/" in name
        or (slash and not (name and _HOST_PATTERN.match(host)))
    ):
        raise InvalidInput(
            f"{selector!r} is not a VM name, a pattern such as web-*, or all (a host may come "
            "first, as hv1/web-*)"
        )
    if len(selector) > SELECTOR_MAX_LENGTH:
        raise InvalidInput(
            f"the VM pattern is {len(selector)} characters long; the limit is "
            f"{SELECTOR_MAX_LENGTH} (libvirt's own limit for a name)"
        )
    return selector


def validate_schedule_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(
            f"{name!r} cannot be a schedule name: use up to 40 lowercase letters, digits, - "
            "and _, starting with a letter or digit"
        )
    return name


class ScheduleTask(enum.Enum):
    """What a schedule does at each of its times."""

    # Internal full snapshots (disk and memory, in the VM's image).
    SNAPSHOT = "snapshot"
    # Incremental snapshots: restore points in the backup store, outside the image.
    INCREMENTAL = "incremental"
    # Re-read everything the backup store holds for the VMs and check it.
    VERIFY = "verify"
    # Restore drills of the VMs not drilled lately, one at a time (``core.services.drills``).
    DRILL = "drill"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule. ``policy`` None means snapshots only, no pruning; the policy
    applies to the kind of snapshot the schedule takes, never to another's."""

    id: int
    name: str
    vms: str
    when: When
    policy: RetentionPolicy | None
    channel: str | None
    owner: str
    created_at: datetime
    grace: timedelta = DEFAULT_GRACE
    enabled: bool = True
    last_fire: datetime | None = None
    task: ScheduleTask = ScheduleTask.SNAPSHOT
    # With a policy: full snapshots it would delete are moved to the backup store instead.
    archive: bool = False

    def covers(self, vm_name: str) -> bool:
        return self.vms == ALL_VMS or fnmatch.fnmatchcase(vm_name, self.vms)

    def snapshot_label(self, fire_time: datetime) -> str:
        """``nightly-20251216-0200``: sortable, and unique per run of the schedule."""
        local = fire_time.astimezone(ZoneInfo(self.when.timezone))
        return f"{self.name}-{local:%Y%m%d-%H%M}"

    @property
    def freshness_limits(self) -> tuple[timedelta, timedelta]:
        """(warn, critical): a VM whose newest snapshot is older than these is reported."""
        interval = self.when.nominal_interval
        return interval * 1.5, interval * 3
