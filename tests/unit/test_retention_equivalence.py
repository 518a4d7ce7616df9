"""The fast retention planning (issue 12) decides exactly as the engine did before it: same
decisions, same reasons, same order, same refusal, on random snapshot sets, policies, time zones
(with DST changes) and plan times, and on sets large enough to fill every rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.retention import RetentionItem, RetentionPolicy, plan_retention
from tests.unit import retention_reference as reference
from tests.unit.test_retention import PROPS, ZONES, moments, policies, snapshot_sets


@PROPS
@given(snapshot_sets(), policies(), st.sampled_from(ZONES), st.none() | moments)
def test_fast_plan_equals_the_reference_plan(
    items: list[RetentionItem],
    policy: RetentionPolicy,
    tz: ZoneInfo,
    now: datetime | None,
) -> None:
    assert plan_retention(items, policy, tz, now) == reference.plan_retention(
        items, policy, tz, now
    )


@pytest.mark.parametrize("seed", range(6))
def test_fast_plan_equals_the_reference_on_years_of_snapshots(seed: int) -> None:
    # Thousands of snapshots over three years across DST changes, with equal times (ties by key),
    # held, manual and safety ones: every rule fills, stops, covers and removes.
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    items = []
    for n in range(4000):
        when = start + timedelta(minutes=rng.choice([rng.randrange(0, 3 * 365 * 1440), 600]))
        kind = rng.randrange(20)
        items.append(
            RetentionItem(f"s-{n:05d}", when, kind == 0, scheduled=kind > 2, safety=kind == 1)
        )
    rng.shuffle(items)
    policy = RetentionPolicy(
        *(rng.choice([0, 1, 3, 24, 60]) for _ in range(6)),
        keep_oldest=rng.random() < 0.5,
        include_manual=rng.random() < 0.5,
    )
    if not any(n for _, n in policy.counts()):
        policy = RetentionPolicy(keep_daily=7)
    tz = ZoneInfo(rng.choice(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]))
    now = start + timedelta(days=3 * 365)
    fast = plan_retention(items, policy, tz, now)
    assert fast == reference.plan_retention(items, policy, tz, now)
    assert fast.delete  # the comparison covered delete reasons, not only keeps


def test_duplicate_keys_are_named_as_before() -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    items = [RetentionItem(k, when) for k in ("b", "a", "b", "c", "a")]
    policy = RetentionPolicy(keep_last=1)
    with pytest.raises(ValueError, match=r"duplicate snapshot keys: a, b$"):
        plan_retention(items, policy, UTC)
    with pytest.raises(ValueError, match=r"duplicate snapshot keys: a, b$"):
        reference.plan_retention(items, policy, UTC)


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu", "America/St_Johns"]
)
def test_hours_around_offset_changes_and_hour_edges_match_the_reference(zone: str) -> None:
    # Local hours are worked out once per UTC hour where the zone allows it: times a
    # microsecond either side of each hour, through both of the year's offset changes (Lord
    # Howe's is half an hour; Kathmandu and St John's are never whole hours off UTC).
    items = []
    for day in (datetime(2025, 3, 29, tzinfo=UTC), datetime(2025, 10, 25, tzinfo=UTC)):
        for hour in range(72):
            edge = day + timedelta(hours=hour)
            for n, delta in enumerate((-1, 0, 1, 1_000, 1_799_000_000)):
                when = edge + timedelta(microseconds=delta)
                items.append(RetentionItem(f"{when.isoformat()}-{n}", when))
    policy = RetentionPolicy(keep_hourly=50, keep_daily=2, keep_oldest=False)
    tz = ZoneInfo(zone)
    fast = plan_retention(items, policy, tz)
    assert fast == reference.plan_retention(items, policy, tz)
    assert any("hourly: hour" in d.reason for d in fast.delete)
