"""Retention engine: the worked example of reference/retention.md, calendar edges, holds, refusals,
safety snapshots, and Hypothesis properties (partition, holds, newest, reasons, idempotence,
bounds, the safety rule, include-manual)."""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain import retention
from core.domain.retention import (
    DEFAULT_SAFETY_KEEP_DAYS,
    DEFAULT_SAFETY_KEEP_LAST,
    EMPTY_POLICY_MESSAGE,
    RetentionItem,
    RetentionPlan,
    RetentionPolicy,
    items_from_snapshots,
    plan_retention,
)
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    Origin,
    Snapshot,
    SnapshotKind,
)
from core.errors import InvalidInput
from tests.reliability.figures import record

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz: tzinfo = UTC) -> datetime:
    """``"2025-03-30 10:00"`` as an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz)


def sched(key: str, when: str, *, held: bool = False) -> RetentionItem:
    return RetentionItem(key, at(when), held=held, scheduled=True)


def dailies(first: str, days: int) -> list[RetentionItem]:
    start = at(first + " 02:00")
    return [
        RetentionItem(f"d-{(start + timedelta(days=n)):%m-%d}", start + timedelta(days=n))
        for n in range(days)
    ]


def by_key(plan: RetentionPlan) -> dict[str, tuple[bool, str]]:
    return {d.key: (d.keep, d.reason) for d in plan.decisions}


# --- The worked example of retention.md section 2 -------------------------------------------

# Daily snapshots at 02:00 from 2025-01-01 to 2025-03-31 (90), plus two manual ones on Sunday
# 2025-03-30 at 10:00 and 15:00: 92 snapshots.
EXAMPLE = [
    *dailies("2025-01-01", 90),
    RetentionItem("m-1000", at("2025-03-30 10:00"), scheduled=False),
    RetentionItem("m-1500", at("2025-03-30 15:00"), scheduled=False),
]


def example_policy(*, keep_oldest: bool, include_manual: bool = False) -> RetentionPolicy:
    return RetentionPolicy.from_counts(
        last=3,
        daily=7,
        weekly=4,
        monthly=3,
        keep_oldest=keep_oldest,
        include_manual=include_manual,
    )


def test_example_input_matches_the_reference() -> None:
    assert len(EXAMPLE) == 92
    assert EXAMPLE[89].created_at == at("2025-03-31 02:00")
    assert at("2025-03-30 10:00").strftime("%a") == "Sun"


def test_example_pbs_keeps_15_scheduled_and_both_manual() -> None:
    plan = plan_retention(EXAMPLE, example_policy(keep_oldest=False), UTC)
    scheduled_kept = [d for d in plan.keep if d.reason != "manual"]
    assert len(scheduled_kept) == 15
    assert len(plan.keep) == 17
    assert len(plan.delete) == 92 - 17
    assert plan.refused is None
    got = by_key(plan)
    assert got["m-1000"] == (True, "manual")
    assert got["m-1500"] == (True, "manual")
    # Manual ones take no `last` slot: the three newest scheduled do.
    assert [got[k] for k in ("d-03-31", "d-03-30", "d-03-29")] == [
        (True, "last #1"),
        (True, "last #2"),
        (True, "last #3"),
    ]
    assert got["d-03-28"] == (True, "daily #1")
    assert got["d-03-22"] == (True, "daily #7")
    assert [got[k] for k in ("d-03-16", "d-03-09", "d-03-02", "d-02-23")] == [
        (True, "weekly #1"),
        (True, "weekly #2"),
        (True, "weekly #3"),
        (True, "weekly #4"),
    ]
    # February is covered by the 02-23 weekly, and 02-28 was marked removed in the weekly pass
    # (same ISO week as 03-02), so the monthly rule finds January only.
    assert got["d-01-31"] == (True, "monthly #1")
    assert got["d-02-28"] == (False, "weekly: week 2025-W09 already kept")
    assert got["d-01-01"] == (False, "monthly: month 2025-01 already kept")


def test_example_keep_oldest_adds_the_first_snapshot_as_monthly_oldest() -> None:
    plan = plan_retention(EXAMPLE, example_policy(keep_oldest=True), UTC)
    assert len([d for d in plan.keep if d.reason != "manual"]) == 16
    assert by_key(plan)["d-01-01"] == (True, "monthly[oldest]")


@pytest.mark.parametrize(("keep_oldest", "kept"), [(False, 15), (True, 16)])
def test_example_with_manual_included_matches_the_reference_table(
    keep_oldest: bool, kept: int
) -> None:
    # The reference table runs the algorithms over all 92 snapshots, manual ones included.
    plan = plan_retention(
        EXAMPLE, example_policy(keep_oldest=keep_oldest, include_manual=True), UTC
    )
    assert len(plan.keep) == kept
    reasons = {d.key: d.reason for d in plan.keep}
    assert [k for k, r in reasons.items() if r.startswith("last")] == [
        "d-03-31",
        "m-1500",
        "m-1000",
    ]
    assert sorted(k for k, r in reasons.items() if r.startswith("daily")) == [
        f"d-03-{day}" for day in range(23, 30)
    ]
    assert sorted(k for k, r in reasons.items() if r.startswith("weekly")) == [
        "d-02-23",
        "d-03-02",
        "d-03-09",
        "d-03-16",
    ]
    assert [k for k, r in reasons.items() if r.startswith("monthly")] == (
        ["d-01-31", "d-01-01"] if keep_oldest else ["d-01-31"]
    )
    # The scheduled 03-30 02:00 shares its day with two kept manual snapshots.
    assert by_key(plan)["d-03-30"] == (False, "daily: day 2025-03-30 already kept")


def test_decisions_are_newest_first_and_beyond_reason_names_the_policy() -> None:
    plan = plan_retention(
        dailies("2025-01-01", 10), RetentionPolicy.from_counts(last=2, keep_oldest=False), UTC
    )
    times = [d.created_at for d in plan.decisions]
    assert times == sorted(times, reverse=True)
    assert plan.keep_keys == ("d-01-10", "d-01-09")
    assert {d.reason for d in plan.delete} == {"beyond last=2"}
    assert len(plan.delete_keys) == 8


# --- Calendar ---------------------------------------------------------------------------------


def test_iso_week_belongs_to_its_iso_year_not_the_calendar_year() -> None:
    # Mon 2024-12-30 is in ISO week 2025-W01 with Wed 2025-01-01; Sun 2024-12-29 is 2024-W52.
    items = [
        sched("sun", "2024-12-29 02:00"),
        sched("mon", "2024-12-30 02:00"),
        sched("wed", "2025-01-01 02:00"),
    ]
    plan = plan_retention(items, RetentionPolicy.from_counts(weekly=2, keep_oldest=False), UTC)
    assert by_key(plan) == {
        "wed": (True, "weekly #1"),
        "mon": (False, "weekly: week 2025-W01 already kept"),
        "sun": (True, "weekly #2"),
    }


def test_weeks_run_monday_to_sunday() -> None:
    items = [
        sched("mon", "2025-03-31 02:00"),
        sched("sun", "2025-03-30 23:00"),
        sched("sat", "2025-03-29 02:00"),
        sched("prev-sun", "2025-03-23 02:00"),
    ]
    plan = plan_retention(items, RetentionPolicy.from_counts(weekly=3, keep_oldest=False), UTC)
    assert plan.keep_keys == ("mon", "sun", "prev-sun")
    assert plan.delete_keys == ("sat",)


def test_periods_are_computed_in_the_configured_time_zone() -> None:
    # 23:30 UTC on 1 March is 00:30 on 2 March in Berlin: the same day as 10:00 UTC on 2 March.
    items = [sched("late", "2025-03-01 23:30"), sched("morning", "2025-03-02 10:00")]
    policy = RetentionPolicy.from_counts(daily=2, keep_oldest=False)

    in_utc = plan_retention(items, policy, UTC)
    assert in_utc.delete == ()

    in_berlin = plan_retention(items, policy, BERLIN)
    assert by_key(in_berlin) == {
        "morning": (True, "daily #1"),
        "late": (False, "daily: day 2025-03-02 already kept"),
    }


def test_empty_days_do_not_count() -> None:
    items = [
        sched("a", "2025-03-10 02:00"),
        sched("b", "2025-03-01 02:00"),
        sched("c", "2025-02-01 02:00"),
    ]
    plan = plan_retention(items, RetentionPolicy.from_counts(daily=3, keep_oldest=False), UTC)
    assert plan.delete == ()


def test_hourly_rule_keeps_the_newest_of_each_hour() -> None:
    items = [
        sched("h10b", "2025-03-01 10:50"),
        sched("h10a", "2025-03-01 10:05"),
        sched("h09", "2025-03-01 09:59"),
    ]
    plan = plan_retention(items, RetentionPolicy.from_counts(hourly=2), UTC)
    assert by_key(plan) == {
        "h10b": (True, "hourly #1"),
        "h10a": (False, "hourly: hour 2025-03-01 10:00 already kept"),
        "h09": (True, "hourly #2"),
    }


def test_young_vm_keeps_its_oldest_point_with_keep_oldest() -> None:
    # Ten days old, monthly=3 can find one month only; the first snapshot stays.
    items = dailies("2025-03-01", 10)
    with_oldest = plan_retention(items, RetentionPolicy.from_counts(last=1, monthly=3), UTC)
    assert by_key(with_oldest)["d-03-01"] == (True, "monthly[oldest]")
    without = plan_retention(
        items, RetentionPolicy.from_counts(last=1, monthly=3, keep_oldest=False), UTC
    )
    assert without.keep_keys == ("d-03-10",)


def test_keep_oldest_does_nothing_when_every_count_is_filled() -> None:
    plan = plan_retention(dailies("2025-01-01", 30), RetentionPolicy.from_counts(daily=5), UTC)
    assert len(plan.keep) == 5
    assert not any("[oldest]" in d.reason for d in plan.decisions)


# --- Holds and manual snapshots ---------------------------------------------------------------


def test_held_snapshots_are_never_deleted_and_do_not_evict_a_daily() -> None:
    items = dailies("2025-03-01", 10)
    items[9] = RetentionItem(items[9].key, items[9].created_at, held=True)  # newest, held
    items[0] = RetentionItem(items[0].key, items[0].created_at, held=True)  # oldest, held
    plan = plan_retention(items, RetentionPolicy.from_counts(daily=3, keep_oldest=False), UTC)
    got = by_key(plan)
    assert got["d-03-10"] == (True, "held")
    assert got["d-03-01"] == (True, "held")
    # Three dailies besides the holds: the hold took no slot.
    assert [k for k, (keep, r) in got.items() if r.startswith("daily")] == [
        "d-03-09",
        "d-03-08",
        "d-03-07",
    ]
    assert len(plan.keep) == 5


def test_held_snapshot_covers_no_period() -> None:
    items = [
        sched("held", "2025-03-02 12:00", held=True),
        sched("same-day", "2025-03-02 02:00"),
    ]
    plan = plan_retention(items, RetentionPolicy.from_counts(daily=1), UTC)
    assert by_key(plan)["same-day"] == (True, "daily #1")


def test_manual_snapshots_become_candidates_only_when_included() -> None:
    items = [
        RetentionItem("manual", at("2025-03-03 09:00"), scheduled=False),
        sched("s2", "2025-03-02 02:00"),
        sched("s1", "2025-03-01 02:00"),
    ]
    excluded = plan_retention(items, RetentionPolicy.from_counts(last=1, keep_oldest=False), UTC)
    assert by_key(excluded) == {
        "manual": (True, "manual"),
        "s2": (True, "last #1"),
        "s1": (False, "beyond last=1"),
    }
    included = plan_retention(
        items,
        RetentionPolicy.from_counts(last=1, keep_oldest=False, include_manual=True),
        UTC,
    )
    assert included.keep_keys == ("manual",)
    assert included.delete_keys == ("s2", "s1")


def test_items_from_snapshots_marks_only_scheduled_origin_as_scheduled() -> None:
    def snap(name: str, origin: Origin, held: bool = False) -> Snapshot:
        return Snapshot(
            "uuid",
            "web-01",
            name,
            name,
            "",
            SnapshotKind.FULL,
            CapturedState.RUNNING,
            False,
            at("2025-03-01 02:00"),
            "U1",
            origin,
            CatalogueStatus.PRESENT,
            None,
            held,
        )

    items = items_from_snapshots(
        [
            snap("sb-a", Origin.SCHEDULED, held=True),
            snap("sb-b", Origin.MANUAL),
            snap("sb-c", Origin.SAFETY),
            snap("sb-d", Origin.EXTERNAL),
        ]
    )
    assert [(i.key, i.scheduled, i.held, i.safety) for i in items] == [
        ("sb-a", True, True, False),
        ("sb-b", False, False, False),
        ("sb-c", False, False, True),
        ("sb-d", False, False, False),
    ]


# --- Safety snapshots -------------------------------------------------------------------------

NOW = at("2025-03-31 12:00")


def safety(key: str, days_old: float, *, held: bool = False) -> RetentionItem:
    return RetentionItem(
        key, NOW - timedelta(days=days_old), held=held, scheduled=False, safety=True
    )


def test_safety_snapshots_keep_the_newest_three_and_those_not_older_than_14_days() -> None:
    items = [
        sched("s", "2025-03-31 02:00"),
        *(safety(f"safe-{age}", age) for age in (1, 5, 9, 13, 14, 20, 40)),
    ]
    plan = plan_retention(items, RetentionPolicy.from_counts(last=1), UTC, now=NOW)
    assert by_key(plan) == {
        "s": (True, "last #1"),
        "safe-1": (True, "safety snapshot: one of the 3 newest"),
        "safe-5": (True, "safety snapshot: one of the 3 newest"),
        "safe-9": (True, "safety snapshot: one of the 3 newest"),
        "safe-13": (True, "safety snapshot: not older than 14 days"),
        "safe-14": (True, "safety snapshot: not older than 14 days"),
        "safe-20": (False, "safety snapshot older than 14 days and not among the 3 newest"),
        "safe-40": (False, "safety snapshot older than 14 days and not among the 3 newest"),
    }


def test_old_safety_snapshots_are_kept_when_among_the_newest() -> None:
    items = [safety("a", 30), safety("b", 60), safety("c", 90), safety("d", 120)]
    plan = plan_retention(items, RetentionPolicy.from_counts(daily=7), UTC, now=NOW)
    assert plan.keep_keys == ("a", "b", "c")
    assert plan.delete_keys == ("d",)


def test_a_held_safety_snapshot_is_kept_and_takes_no_place_among_the_newest() -> None:
    items = [safety("held", 1, held=True), safety("a", 30), safety("b", 31), safety("c", 32)]
    items.append(safety("d", 33))
    plan = plan_retention(items, RetentionPolicy.from_counts(last=1), UTC, now=NOW)
    got = by_key(plan)
    assert got["held"] == (True, "held")
    assert [k for k, (keep, _) in got.items() if keep] == ["held", "a", "b", "c"]
    assert got["d"][0] is False


def test_safety_rule_is_configurable_per_policy() -> None:
    items = [safety("a", 1), safety("b", 2), safety("c", 3), sched("s", "2025-03-31 02:00")]
    one_day = RetentionPolicy.from_counts(last=1, safety_keep_last=1, safety_keep_days=1)
    assert by_key(plan_retention(items, one_day, UTC, now=NOW)) == {
        "s": (True, "last #1"),
        "a": (True, "safety snapshot: the newest"),
        "b": (False, "safety snapshot older than 1 day and not the newest"),
        "c": (False, "safety snapshot older than 1 day and not the newest"),
    }
    none_kept = RetentionPolicy.from_counts(last=1, safety_keep_last=0, safety_keep_days=0)
    plan = plan_retention(items, none_kept, UTC, now=NOW)
    assert plan.delete_keys == ("a", "b", "c")
    assert {d.reason for d in plan.delete} == {"safety snapshot older than 0 days"}


def test_safety_snapshots_are_never_candidates_of_the_keep_rules() -> None:
    # Even with manual snapshots included, a safety snapshot neither takes a `last` slot nor
    # covers a day: its own rule decides it.
    items = [safety("safe", 0.1), sched("s2", "2025-03-31 02:00"), sched("s1", "2025-03-30 02:00")]
    policy = RetentionPolicy.from_counts(last=1, daily=1, include_manual=True, keep_oldest=False)
    got = by_key(plan_retention(items, policy, UTC, now=NOW))
    assert got == {
        "safe": (True, "safety snapshot: one of the 3 newest"),
        "s2": (True, "last #1"),
        "s1": (True, "daily #1"),
    }


def test_a_vm_left_with_only_old_safety_snapshots_keeps_them_all() -> None:
    items = [safety("a", 30), safety("b", 40)]
    policy = RetentionPolicy.from_counts(last=1, safety_keep_last=0)
    plan = plan_retention(items, policy, UTC, now=NOW)
    assert plan.delete == ()
    assert plan.refused is not None


def test_without_now_safety_age_counts_from_the_newest_snapshot() -> None:
    items = [sched("s", "2025-03-31 12:00"), *(safety(f"x{n}", n) for n in (1, 2, 3, 10, 20))]
    plan = plan_retention(items, RetentionPolicy.from_counts(last=1), UTC)
    assert plan.delete_keys == ("x20",)


def test_a_stored_policy_without_the_new_fields_loads_with_defaults() -> None:
    # ScheduleRow.policy as an older release wrote it.
    old_row = {
        "keep_last": 3,
        "keep_hourly": 0,
        "keep_daily": 7,
        "keep_weekly": 0,
        "keep_monthly": 0,
        "keep_yearly": 0,
        "keep_oldest": True,
    }
    policy = RetentionPolicy(**old_row)  # type: ignore[arg-type]
    policy.validate()
    assert policy.include_manual is False
    assert policy.safety_rule == (DEFAULT_SAFETY_KEEP_LAST, DEFAULT_SAFETY_KEEP_DAYS) == (3, 14)
    assert policy.with_safety_defaults(5, 30).safety_rule == (5, 30)
    own = replace(policy, safety_keep_last=1)
    assert own.with_safety_defaults(5, 30).safety_rule == (1, 30), "the policy's own value wins"
    assert RetentionPolicy(**asdict(own)) == own


@pytest.mark.parametrize("field", ["safety_keep_last", "safety_keep_days"])
def test_negative_safety_rule_is_refused(field: str) -> None:
    bad: dict[str, Any] = {field: -1}
    option = "--" + field.replace("_", "-")
    with pytest.raises(InvalidInput, match=f"{option} must be 0 or more, not -1"):
        replace(RetentionPolicy(keep_daily=1), **bad).validate()


def test_describe_scope_says_what_happens_to_manual_and_safety_snapshots() -> None:
    policy = RetentionPolicy.from_counts(last=3)
    assert policy.describe_scope() == (
        "manual snapshots kept; safety snapshots: the 3 newest and any not older than 14 days"
    )
    included = RetentionPolicy.from_counts(
        last=3, include_manual=True, safety_keep_last=1, safety_keep_days=1
    )
    assert included.describe_scope() == (
        "manual snapshots included; safety snapshots: the newest and any not older than 1 day"
    )


# --- Policy validation and refusals -----------------------------------------------------------


def test_empty_policy_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no keep rule"):
        RetentionPolicy.from_counts()
    with pytest.raises(InvalidInput) as info:
        plan_retention(dailies("2025-01-01", 3), RetentionPolicy(), UTC)
    assert str(info.value) == EMPTY_POLICY_MESSAGE


@pytest.mark.parametrize("rule", ["last", "hourly", "daily", "weekly", "monthly", "yearly"])
def test_negative_count_is_refused(rule: str) -> None:
    negative: dict[str, Any] = {f"keep_{rule}": -1}
    policy = replace(RetentionPolicy(keep_daily=7), **negative)
    with pytest.raises(InvalidInput, match=f"--keep-{rule} must be 0 or more, not -1"):
        policy.validate()
    with pytest.raises(InvalidInput, match=f"--keep-{rule}"):
        plan_retention(dailies("2025-01-01", 3), policy, UTC)


def test_describe_lists_the_rules_in_use_in_order() -> None:
    policy = RetentionPolicy.from_counts(weekly=4, last=3, daily=7)
    assert policy.describe() == "last=3, daily=7, weekly=4"


def test_duplicate_keys_and_naive_times_are_bugs() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        plan_retention(
            [sched("a", "2025-03-01 02:00"), sched("a", "2025-03-02 02:00")],
            RetentionPolicy.from_counts(last=1),
            UTC,
        )
    with pytest.raises(ValueError, match="time zone"):
        RetentionItem("a", datetime(2025, 3, 1))


def test_only_snapshot_of_a_vm_is_kept_by_every_rule() -> None:
    only = [sched("only", "2025-03-01 02:00")]
    for rule in retention.RULES:
        one: dict[str, Any] = {f"keep_{rule}": 1}
        policy = replace(RetentionPolicy(), **one)
        plan = plan_retention(only, policy, UTC)
        assert plan.keep_keys == ("only",)


def test_a_plan_that_would_empty_the_vm_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No valid policy can select nothing (the first rule always keeps the newest), so break the
    # selection to check the last line of defence on its own.
    monkeypatch.setattr(retention, "_select", lambda candidates, policy, tz: {})
    plan = plan_retention(dailies("2025-03-01", 3), RetentionPolicy.from_counts(last=1), UTC)
    assert plan.delete == ()
    assert len(plan.keep) == 3
    assert plan.refused is not None
    assert "all 3 snapshots" in plan.refused
    assert all(d.reason.startswith("refused: beyond last=1") for d in plan.decisions)


def test_a_plan_that_keeps_a_manual_snapshot_is_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "_select", lambda candidates, policy, tz: {})
    items = [*dailies("2025-03-01", 3), RetentionItem("m", at("2025-01-01 00:00"), scheduled=False)]
    plan = plan_retention(items, RetentionPolicy.from_counts(last=1), UTC)
    assert plan.refused is None
    assert plan.keep_keys == ("m",)


# --- Properties -------------------------------------------------------------------------------

EPOCH = datetime(2024, 12, 1, tzinfo=UTC)
ZONES: list[tzinfo] = [UTC, BERLIN, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]


@st.composite
def snapshot_sets(draw: st.DrawFn) -> list[RetentionItem]:
    # Minutes over ~14 months, sometimes from a few values only, to get ties and shared periods.
    spread = draw(st.sampled_from([60 * 3, 60 * 24 * 10, 60 * 24 * 420]))
    size = draw(st.sampled_from([0, 1, 2, 5, 12, 30, 50]))
    minutes = draw(st.lists(st.integers(0, spread), min_size=size, max_size=size))
    items = []
    for n, minute in enumerate(minutes):
        held = draw(st.integers(0, 9)) == 0
        origin = draw(st.integers(0, 9))  # 0-1 manual, 2-3 safety, else scheduled
        items.append(
            RetentionItem(
                f"sb-{n:03d}",
                EPOCH + timedelta(minutes=minute),
                held,
                scheduled=origin > 3,
                safety=origin in (2, 3),
            )
        )
    return items


# When plans are made: before, during and long after the snapshots' span.
moments = st.integers(-60 * 24 * 30, 60 * 24 * 500).map(lambda m: EPOCH + timedelta(minutes=m))


@st.composite
def policies(draw: st.DrawFn) -> RetentionPolicy:
    # Mostly rules off and small counts, so plans delete something.
    count = st.sampled_from([0, 0, 0, 1, 2, 3, 5])
    counts = draw(st.lists(count, min_size=6, max_size=6).filter(any))
    last, hourly, daily, weekly, monthly, yearly = counts
    return RetentionPolicy(
        last,
        hourly,
        daily,
        weekly,
        monthly,
        yearly,
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.sampled_from([None, 0, 1, 3])),
        draw(st.sampled_from([None, 0, 1, 14, 90])),
    )


PROPS = settings(max_examples=int(os.environ.get("SNAPBOT_FUZZ_EXAMPLES", "200")), deadline=None)


def candidate(item: RetentionItem, policy: RetentionPolicy) -> bool:
    return not item.held and not item.safety and (item.scheduled or policy.include_manual)


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES))
def test_keep_and_delete_partition_the_input(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo
) -> None:
    plan = plan_retention(items, policy, tz)
    keys = [i.key for i in items]
    assert sorted(plan.keep_keys + plan.delete_keys) == sorted(keys)
    assert not set(plan.keep_keys) & set(plan.delete_keys)
    assert len(plan.decisions) == len(items)
    assert all(d.reason for d in plan.decisions)


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES))
def test_held_manual_and_newest_are_never_deleted(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo
) -> None:
    plan = plan_retention(items, policy, tz)
    deleted = set(plan.delete_keys)
    for item in items:
        if item.held or (not item.scheduled and not item.safety and not policy.include_manual):
            assert item.key not in deleted
    if items:
        assert plan.keep  # never empties the VM
    candidates = [i for i in items if candidate(i, policy)]
    if candidates:
        newest = max(candidates, key=lambda i: (i.created_at, i.key))
        assert newest.key not in deleted
        assert plan.refused is None


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES), moments)
def test_held_is_never_deleted_and_the_vm_never_emptied_at_any_time(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo, now: datetime
) -> None:
    plan = plan_retention(items, policy, tz, now=now)
    deleted = set(plan.delete_keys)
    assert not any(i.key in deleted for i in items if i.held)
    assert not items or plan.keep
    assert sorted(plan.keep_keys + plan.delete_keys) == sorted(i.key for i in items)


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES), moments)
def test_safety_snapshots_follow_their_own_rule_exactly(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo, now: datetime
) -> None:
    plan = plan_retention(items, policy, tz, now=now)
    decisions = {d.key: d for d in plan.decisions}
    last, days = policy.safety_rule
    unheld = sorted(
        (i for i in items if i.safety and not i.held),
        key=lambda i: (i.created_at, i.key),
        reverse=True,
    )
    for rank, item in enumerate(unheld, start=1):
        d = decisions[item.key]
        assert d.reason.startswith(("safety snapshot", "refused: safety snapshot"))
        wanted = rank <= last or now - item.created_at <= timedelta(days=days)
        if plan.refused is None:
            assert d.keep is wanted, (rank, d)
        elif not wanted:
            assert d.keep
            assert d.reason.startswith("refused: ")
    # Safety snapshots never change what the keep rules decide for the others.
    without = plan_retention([i for i in items if not i.safety], policy, tz, now=now)
    if plan.refused is None and without.refused is None:
        others = {d.key: (d.keep, d.reason) for d in without.decisions}
        assert {k: v for k, v in by_key(plan).items() if k in others} == others


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES), moments)
def test_included_manual_snapshots_are_judged_exactly_like_scheduled_ones(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo, now: datetime
) -> None:
    included = replace(policy, include_manual=True)
    plan = plan_retention(items, included, tz, now=now)
    as_scheduled = [replace(i, scheduled=True) if not i.safety else i for i in items]
    assert by_key(plan) == by_key(plan_retention(as_scheduled, included, tz, now=now))
    excluded = plan_retention(items, replace(policy, include_manual=False), tz, now=now)
    for item in items:
        if not item.scheduled and not item.safety:
            assert by_key(excluded)[item.key] == (True, "held" if item.held else "manual")


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES))
def test_newest_n_candidates_are_kept_by_last(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo
) -> None:
    plan = plan_retention(items, policy, tz)
    candidates = sorted(
        (i for i in items if candidate(i, policy)),
        key=lambda i: (i.created_at, i.key),
        reverse=True,
    )
    reasons = {d.key: d.reason for d in plan.decisions}
    for rank, item in enumerate(candidates[: policy.keep_last], start=1):
        assert reasons[item.key] == f"last #{rank}"


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES))
def test_replanning_the_kept_snapshots_deletes_nothing(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo
) -> None:
    now = max((i.created_at for i in items), default=EPOCH) + timedelta(days=10)
    first = plan_retention(items, policy, tz, now=now)
    kept = [i for i in items if i.key in set(first.keep_keys)]
    second = plan_retention(kept, policy, tz, now=now)
    assert second.delete == ()
    # And for the same reasons: the plan is stable, not just lucky.
    assert {d.key: d.reason for d in second.decisions} == {d.key: d.reason for d in first.keep}


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES))
def test_kept_candidates_are_bounded_by_the_counts(
    items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo
) -> None:
    plain = [RetentionItem(i.key, i.created_at) for i in items]  # scheduled, not held
    plan = plan_retention(plain, policy, tz)
    total = sum(n for _, n in policy.counts())
    assert len(plan.keep) <= total + (1 if policy.keep_oldest else 0)
    assert sum(d.reason.endswith("[oldest]") for d in plan.keep) <= 1
    # Each rule keeps at most its count.
    for rule, n in policy.counts():
        assert sum(d.reason.startswith(rule + " #") for d in plan.keep) <= n


def test_a_snapshot_removed_by_an_earlier_rule_is_not_taken_by_a_later_one() -> None:
    # PBS: ISO week 2025-W05 runs Mon 01-27 to Sun 02-02. The weekly pass keeps 02-02 and marks
    # 01-27..02-01 removed, so the monthly pass cannot take 01-31 for January.
    items = dailies("2025-01-27", 7)
    pbs = plan_retention(
        items, RetentionPolicy.from_counts(weekly=1, monthly=1, keep_oldest=False), UTC
    )
    assert pbs.keep_keys == ("d-02-02",)
    assert by_key(pbs)["d-01-31"] == (False, "weekly: week 2025-W05 already kept")
    # Keep-oldest then rescues the first snapshot for January.
    ours = plan_retention(items, RetentionPolicy.from_counts(weekly=1, monthly=1), UTC)
    assert ours.keep_keys == ("d-02-02", "d-01-27")
    assert by_key(ours)["d-01-27"] == (True, "monthly[oldest]")


# --- The long run for `make reliability` ------------------------------------------------------

_PROPERTIES = (
    test_keep_and_delete_partition_the_input,
    test_held_manual_and_newest_are_never_deleted,
    test_newest_n_candidates_are_kept_by_last,
    test_replanning_the_kept_snapshots_deletes_nothing,
)
_TIMED_PROPERTIES = (
    test_held_is_never_deleted_and_the_vm_never_emptied_at_any_time,
    test_safety_snapshots_follow_their_own_rule_exactly,
    test_included_manual_snapshots_are_judged_exactly_like_scheduled_ones,
)
LONG_EXAMPLES = int(os.environ.get("SNAPBOT_RELIABILITY_EXAMPLES", "3000"))


@pytest.mark.reliability
def test_every_retention_property_holds_over_many_random_plans() -> None:
    tried = 0

    @settings(max_examples=LONG_EXAMPLES, deadline=None)
    @given(snapshot_sets(), policies(), st.sampled_from(ZONES), moments)
    def every_property(
        items: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo, now: datetime
    ) -> None:
        nonlocal tried
        tried += 1
        for prop in _PROPERTIES:
            prop.hypothesis.inner_test(items, policy, tz)  # type: ignore[attr-defined]
        for timed in _TIMED_PROPERTIES:
            timed.hypothesis.inner_test(items, policy, tz, now)  # type: ignore[attr-defined]

    every_property()
    record(
        "Retention properties",
        f"random snapshot sets (scheduled, manual, safety, held) × policies × time zones × "
        f"plan times; {len(_PROPERTIES) + len(_TIMED_PROPERTIES)} invariants each (partition, "
        "held and last snapshot never deleted, safety rule, include-manual, idempotence)",
        f"{tried} plans checked, 0 violations",
    )
