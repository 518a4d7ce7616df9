"""Which snapshots a retention policy keeps, and why: one pure function for preview and prune.

Semantics (reference/retention.md, section 3): Proxmox Backup Server's ``mark_selections`` with
borg's keep-oldest added.

* **Candidates.** Only scheduled snapshots are candidates, unless the policy says
  ``include_manual`` (then manual and external ones are candidates too). A held snapshot is
  never a candidate, nor is a safety snapshot (they have rules of their own, below).
  Non-candidates are kept (reason ``held`` or ``manual``), use no slot and cover no period.
* **Safety snapshots** (``Origin.SAFETY``, taken before every restore with the guest's full RAM)
  follow their own rule whatever the policy's counts: the newest ``safety_keep_last`` per VM are
  kept, and any other not older than ``safety_keep_days`` (age counted from ``now``, or from the
  newest snapshot when no ``now`` is given); the rest are deleted. A held one is kept and takes
  no place among the newest. ``None`` in the policy means the configured default
  (``SNAPBOT_SAFETY_KEEP_LAST`` / ``SNAPBOT_SAFETY_KEEP_DAYS``), else ``DEFAULT_SAFETY_KEEP_*``.
* **Rules in order** ``last → hourly → daily → weekly → monthly → yearly``, each walking the
  candidates newest first (ties broken by key, so the order is total). For each periodic rule the
  periods of every candidate kept so far are *covered*; a candidate already marked (kept, or
  removed by an earlier rule) is skipped, a candidate in a covered period is skipped without
  counting, the newest candidate of each new period is kept (``daily #3``) and the older ones in
  that period are marked removed, so later rules cannot take them. The rule stops at the first new
  period after its count is reached. ``last`` keeps the newest n candidates (``last #1``).
* **Keep-oldest** (borg ``prune_split``): when hourly..yearly ends with fewer than its count kept,
  the oldest candidate is kept as ``<rule>[oldest]`` (``monthly[oldest]``) unless it is already
  kept. It is kept at once, so later rules see its periods as covered. So it adds at most one
  snapshot to a plan.
* **Periods** are calendar periods in the configured time zone: hour ``%Y-%m-%d %H``, day
  ``%Y-%m-%d``, ISO week ``%G-W%V`` (Monday to Sunday), month ``%Y-%m``, year ``%Y``. Empty periods
  do not count. The selection depends only on the snapshots' own times, never on their age.
* **Safety.** The newest candidate is always kept (``newest``, should no rule have kept it; with a
  valid policy the first rule always does). A plan that would leave the VM with no snapshot at all
  deletes nothing and says why in ``refused``.

Reasons. Kept: ``last #2``, ``hourly #1``, ``daily #3``, ``weekly #1``, ``monthly #2``,
``yearly #1``, ``<rule>[oldest]``, ``newest``, ``held``, ``manual``,
``safety snapshot: one of the 3 newest``, ``safety snapshot: not older than 14 days``. Deleted:

* ``safety snapshot older than 14 days and not among the 3 newest`` -- by the safety rule.
* ``daily: day 2025-03-02 already kept`` -- for the first rule of the policy (hourly..yearly, in
  order) whose period of this snapshot holds a kept candidate: that period is covered, so this one
  is redundant. Period labels: ``hour 2025-03-02 14:00``, ``day 2025-03-02``,
  ``week 2025-W09``, ``month 2025-03``, ``year 2025``.
* ``beyond last=3, daily=7, weekly=4`` -- no rule's period of it is covered: it is older than every
  count reaches.

Idempotent: re-planning over the kept snapshots keeps them all. Every rule sees, among the kept
snapshots, the same marked ones, the same covered periods and the same new periods in the same
order as before (a snapshot removed by a rule sat in a period that rule had already counted, and a
rule never reaches past its stopping point because periods are contiguous in time), and an unfilled
rule finds the same oldest snapshot, which the first plan kept. The property tests check it.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from itertools import islice
from operator import attrgetter, eq

from core.domain.snapshot import Origin, Snapshot
from core.errors import InvalidInput

EMPTY_POLICY_MESSAGE = (
    "a policy with no keep rule would delete everything; give at least one --keep-... count"
)

# (rule, noun for a period in reasons, strftime format of the period key), in application order.
_PERIODIC_RULES: tuple[tuple[str, str, str], ...] = (
    ("hourly", "hour", "%Y-%m-%d %H:00"),
    ("daily", "day", "%Y-%m-%d"),
    ("weekly", "week", "%G-W%V"),
    ("monthly", "month", "%Y-%m"),
    ("yearly", "year", "%Y"),
)
RULES: tuple[str, ...] = ("last", *(rule for rule, _, _ in _PERIODIC_RULES))

# Safety snapshots hold the guest's whole RAM: a few recent ones are the undo of a restore, older
# ones are rarely wanted and expensive.
DEFAULT_SAFETY_KEEP_LAST = 3
DEFAULT_SAFETY_KEEP_DAYS = 14


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many snapshots each rule keeps. Counts are 0 (rule off) or more.

    Stored as JSON in schedules: a field added later must have a default, so older rows load.
    ``safety_keep_*`` None means "the configured default" (see ``with_safety_defaults``).
    """

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_oldest: bool = True
    include_manual: bool = False
    safety_keep_last: int | None = None
    safety_keep_days: int | None = None

    @classmethod
    def from_counts(
        cls,
        *,
        last: int = 0,
        hourly: int = 0,
        daily: int = 0,
        weekly: int = 0,
        monthly: int = 0,
        yearly: int = 0,
        keep_oldest: bool = True,
        include_manual: bool = False,
        safety_keep_last: int | None = None,
        safety_keep_days: int | None = None,
    ) -> RetentionPolicy:
        """A validated policy; raises ``InvalidInput`` like ``validate``."""
        policy = cls(
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
            keep_oldest,
            include_manual,
            safety_keep_last,
            safety_keep_days,
        )
        policy.validate()
        return policy

    def with_safety_defaults(self, keep_last: int, keep_days: int) -> RetentionPolicy:
        """This policy with the configured safety rule where it sets none of its own."""
        return replace(
            self,
            safety_keep_last=keep_last if self.safety_keep_last is None else self.safety_keep_last,
            safety_keep_days=keep_days if self.safety_keep_days is None else self.safety_keep_days,
        )

    @property
    def safety_rule(self) -> tuple[int, int]:
        """(newest kept, days kept) for safety snapshots, defaults filled in."""
        last, days = self.safety_keep_last, self.safety_keep_days
        return (
            DEFAULT_SAFETY_KEEP_LAST if last is None else last,
            DEFAULT_SAFETY_KEEP_DAYS if days is None else days,
        )

    def counts(self) -> tuple[tuple[str, int], ...]:
        """(rule, count) for every rule, in application order."""
        return (
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        )

    def count(self, rule: str) -> int:
        """The count of one rule (``"daily"`` → ``keep_daily``)."""
        return dict(self.counts())[rule]

    def validate(self) -> None:
        """Raise ``InvalidInput`` for a negative or non-integer count (safety rule included), or
        when every keep count is 0."""
        options: list[tuple[str, object]] = [(f"--keep-{r}", n) for r, n in self.counts()]
        options += [
            ("--safety-keep-last", self.safety_keep_last),
            ("--safety-keep-days", self.safety_keep_days),
        ]
        for option, value in options:
            if value is None and option.startswith("--safety"):
                continue  # the configured default
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{option} must be a whole number, not {value!r}")
            if value < 0:
                raise InvalidInput(f"{option} must be 0 or more, not {value}")
        if all(n == 0 for _, n in self.counts()):
            raise InvalidInput(EMPTY_POLICY_MESSAGE)

    def describe(self) -> str:
        """The rules in use, e.g. ``last=3, daily=7, weekly=4``."""
        return ", ".join(f"{rule}={n}" for rule, n in self.counts() if n > 0)

    def describe_scope(self) -> str:
        """What else the policy decides, for previews and schedule listings."""
        last, days = self.safety_rule
        manual = "manual snapshots included" if self.include_manual else "manual snapshots kept"
        return (
            f"{manual}; safety snapshots: the {_newest(last)} and any not older than {_days(days)}"
        )


def _newest(n: int) -> str:
    return "newest" if n == 1 else f"{n} newest"


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def _safety_delete_reason(last: int, days: int) -> str:
    """Why a safety snapshot goes: too old, and not among the newest kept."""
    if last == 0:
        return f"safety snapshot older than {_days(days)}"
    among = "not the newest" if last == 1 else f"not among the {last} newest"
    return f"safety snapshot older than {_days(days)} and {among}"


@dataclass(frozen=True, slots=True)
class RetentionItem:
    """What the engine needs to know about one snapshot. ``key`` is its libvirt name."""

    key: str
    created_at: datetime
    held: bool = False
    scheduled: bool = True
    safety: bool = False

    def __post_init__(self) -> None:
        if self.created_at.utcoffset() is None:
            raise ValueError(f"snapshot {self.key!r}: created_at must carry a time zone")


def items_from_snapshots(snapshots: Iterable[Snapshot]) -> list[RetentionItem]:
    """Catalogue snapshots as engine input; only ``Origin.SCHEDULED`` counts as scheduled."""
    return [
        RetentionItem(
            s.libvirt_name,
            s.created_at,
            s.held,
            s.origin is Origin.SCHEDULED,
            s.origin is Origin.SAFETY,
        )
        for s in snapshots
    ]


@dataclass(frozen=True, slots=True)
class Decision:
    """Keep or delete one snapshot, and the reason shown to people."""

    key: str
    created_at: datetime
    keep: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """Every decision, newest first. ``refused`` says why nothing is deleted when the engine
    stepped back; then ``delete`` is empty."""

    decisions: tuple[Decision, ...]
    refused: str | None = None
    as_of: datetime | None = None

    @property
    def keep(self) -> tuple[Decision, ...]:
        """Decisions to keep, newest first."""
        return tuple(d for d in self.decisions if d.keep)

    @property
    def delete(self) -> tuple[Decision, ...]:
        """Decisions to delete, newest first."""
        return tuple(d for d in self.decisions if not d.keep)

    @property
    def keep_keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.keep)

    @property
    def delete_keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.delete)


def _newest_first(items: Iterable[RetentionItem]) -> list[RetentionItem]:
    """Newest first, equal times by key (descending), as a sort on (time, key) gives. Sorted by
    time alone (no tuple per snapshot), and again on (time, key) only when two times are
    equal, which a scan of neighbours finds in C."""
    ordered = sorted(items, key=_CREATED_AT, reverse=True)
    times = [i.created_at for i in ordered]
    if any(map(eq, times, islice(times, 1, None))):
        ordered.sort(key=_BY_TIME_THEN_KEY, reverse=True)
    return ordered


_CREATED_AT = attrgetter("created_at")
_BY_TIME_THEN_KEY = attrgetter("created_at", "key")


def _hour_keys(local: list[datetime]) -> list[int]:
    """One integer per local time, equal exactly when the hour label (``%Y-%m-%d %H:00``) is
    equal. Every other period is a function of the hour, so it is derived from these
    (``_Periods.key``): comparing ints is what makes 10^6 snapshots cheap, where a
    strftime per snapshot per rule cost seconds. Labels are formatted only for reasons."""
    return [t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour for t in local]


def _iso_week(day: int) -> int:
    """ISO year and week (``%G-W%V``) of a day key, as one integer."""
    iso = date(day // 10_000, day // 100 % 100, day % 100).isocalendar()
    return iso.year * 100 + iso.week


# The hour key divided by this is the rule's period key (weekly: by ISO week of the day).
_DIVISOR = {"hourly": 1, "daily": 100, "monthly": 10_000, "yearly": 1_000_000}


@dataclass(frozen=True, slots=True)
class _Periods:
    """A periodic rule in use. Its period key of a candidate is derived from the candidate's
    hour key when asked (``key``), never for all 10^6: rules stop early, and a delete reason is
    worked out once per hour."""

    rule: str
    noun: str
    fmt: str
    wanted: int
    weeks: dict[int, int] | None  # day key -> ISO week key, filled as asked; None: not weekly

    def key(self, hour: int) -> int:
        """The period key for an hour key: equal exactly when the rule's label is."""
        if self.weeks is None:
            return hour // _DIVISOR[self.rule]
        day = hour // 100
        week = self.weeks.get(day)
        if week is None:
            week = self.weeks[day] = _iso_week(day)
        return week


def _select(hours: list[int], policy: RetentionPolicy, periods: list[_Periods]) -> dict[int, str]:
    """Keep reasons of the candidates kept, by their index among the candidates (newest first,
    ``hours`` their hour keys); ``periods``: the rules in use, in application order."""
    count = len(hours)
    reasons: dict[int, str] = {}
    removed: set[int] = set()

    for rank in range(min(policy.keep_last, count)):
        reasons[rank] = f"last #{rank + 1}"

    for rules in periods:
        rule, wanted, key = rules.rule, rules.wanted, rules.key
        covered = {key(hours[i]) for i in reasons}
        included: set[int] = set()
        for i in range(count):
            if i in reasons or i in removed:
                continue
            p = key(hours[i])
            if p in covered:
                continue
            if p in included:
                removed.add(i)
                continue
            if len(included) >= wanted:
                break
            included.add(p)
            reasons[i] = f"{rule} #{len(included)}"
        if policy.keep_oldest and len(included) < wanted and count:
            oldest = count - 1
            if oldest not in reasons:
                reasons[oldest] = f"{rule}[oldest]"

    if count and 0 not in reasons:
        reasons[0] = "newest"
    return reasons


def _select_safety(
    ordered: list[RetentionItem], policy: RetentionPolicy, anchor: datetime | None
) -> dict[str, tuple[str, bool]]:
    """(reason, keep) for each unheld safety snapshot; ``ordered`` newest first."""
    last, days = policy.safety_rule
    decided: dict[str, tuple[str, bool]] = {}
    unheld = [i for i in ordered if i.safety and not i.held]
    for rank, item in enumerate(unheld, start=1):
        if rank <= last:
            newest = "the newest" if last == 1 else f"one of the {last} newest"
            decided[item.key] = (f"safety snapshot: {newest}", True)
        elif anchor is not None and anchor - item.created_at <= timedelta(days=days):
            decided[item.key] = (f"safety snapshot: not older than {_days(days)}", True)
        else:
            decided[item.key] = (_safety_delete_reason(last, days), False)
    return decided


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A plan of 10^6 snapshots allocates millions of small acyclic objects; the cyclic
    collector, triggered by the allocations, walked them again and again (half the time of a
    large plan) and can free none of them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def plan_retention(
    items: Iterable[RetentionItem],
    policy: RetentionPolicy,
    tz: tzinfo,
    now: datetime | None = None,
) -> RetentionPlan:
    """Decide, for every snapshot of one VM, keep or delete and why (module docstring).

    Raises ``InvalidInput`` for an invalid policy and ``ValueError`` for duplicate keys or a naive
    ``now``. ``now`` is only recorded as the plan's ``as_of``: selection uses calendar periods of
    the snapshots' own times, not ages.
    """
    policy.validate()
    if now is not None and now.utcoffset() is None:
        raise ValueError("now must carry a time zone")
    with _gc_paused():
        return _plan(items, policy, tz, now)


def _plan(
    items: Iterable[RetentionItem], policy: RetentionPolicy, tz: tzinfo, now: datetime | None
) -> RetentionPlan:
    ordered = _newest_first(items)
    keys = [i.key for i in ordered]
    if len(set(keys)) != len(keys):
        dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
        raise ValueError(f"duplicate snapshot keys: {', '.join(dupes)}")

    include_manual = policy.include_manual
    candidates = [
        i for i in ordered if not i.held and not i.safety and (i.scheduled or include_manual)
    ]
    local = [c.created_at.astimezone(tz) for c in candidates]
    hours = _hour_keys(local)
    periods = [
        _Periods(rule, noun, fmt, policy.count(rule), {} if rule == "weekly" else None)
        for rule, noun, fmt in _PERIODIC_RULES
        if policy.count(rule) > 0
    ]
    reasons = _select(hours, policy, periods)
    anchor = now if now is not None else (ordered[0].created_at if ordered else None)
    safety_reasons = _select_safety(ordered, policy, anchor)
    # Per rule: the periods holding a kept candidate. A delete reason depends only on the
    # candidate's periods, so on its hour: it is worked out once per hour.
    covered = [(p, {p.key(hours[i]) for i in reasons}) for p in periods]
    beyond = f"beyond {policy.describe()}"
    said: dict[int, str] = {}

    def delete_reason(index: int) -> str:
        for rules, kept in covered:
            if rules.key(hours[index]) in kept:
                label = local[index].strftime(rules.fmt)
                return f"{rules.rule}: {rules.noun} {label} already kept"
        return beyond

    # Keep flag and reason per snapshot, then the decisions built in one map: the loop
    # allocates nothing but the reasons it looks up.
    keeps: list[bool] = []
    whys: list[str] = []
    keep_append, why_append = keeps.append, whys.append
    index = 0  # of the next candidate among ``candidates``
    for item in ordered:
        if item.held:
            keep_append(True)
            why_append("held")
        elif item.safety:
            reason, keep = safety_reasons[item.key]
            keep_append(keep)
            why_append(reason)
        elif not (item.scheduled or include_manual):
            keep_append(True)
            why_append("manual")
        else:
            kept = reasons.get(index)
            if kept is None:
                hour = hours[index]
                why = said.get(hour)
                if why is None:
                    why = said[hour] = delete_reason(index)
                keep_append(False)
                why_append(why)
            else:
                keep_append(True)
                why_append(kept)
            index += 1
    decisions = tuple(map(Decision, keys, [i.created_at for i in ordered], keeps, whys))
    if decisions and not any(keeps):
        refusal = (
            f"this plan would delete all {len(decisions)} snapshots of the VM; "
            "nothing was deleted, because a VM always keeps at least one snapshot"
        )
        decisions = tuple(
            Decision(d.key, d.created_at, True, f"refused: {d.reason}") for d in decisions
        )
        return RetentionPlan(decisions, refusal, now)
    return RetentionPlan(decisions, None, now)
