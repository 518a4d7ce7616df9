"""The pure usage rules: when a filesystem fills (least squares over the last 30 days, on
synthetic histories: steady, noisy, flat, shrinking use, too short), the series a chart draws,
what the store saved, and the estimate for internal snapshots."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from core.domain.usage import (
    FILL_WARNING_DAYS,
    SampleKind,
    StoreUsage,
    UsageSample,
    build_history,
    forecast_fill,
    forecasts_from,
    internal_disk_estimate,
)

GiB = 1024**3
TODAY = date(2026, 6, 30)


def daily(values: list[float], end: date = TODAY) -> list[tuple[date, int]]:
    """Free bytes per day, the last value on ``end``."""
    start = end - timedelta(days=len(values) - 1)
    return [(start + timedelta(days=n), int(v)) for n, v in enumerate(values)]


def test_steady_use_fills_on_the_day_the_line_reaches_zero() -> None:
    # 2 GiB a day out of 100 GiB free: 50 GiB left today, 25 days to go.
    history = daily([100 * GiB - 2 * GiB * n for n in range(26)])
    forecast = forecast_fill("/var/lib/libvirt", history, TODAY)
    assert forecast.enough_history
    assert forecast.bytes_per_day == pytest.approx(2 * GiB)
    assert forecast.days_left == pytest.approx(25)
    assert forecast.fills_on == TODAY + timedelta(days=25)
    assert not forecast.soon
    assert forecast.free_bytes == 50 * GiB


def test_filling_within_two_weeks_is_flagged() -> None:
    history = daily([40 * GiB - 3 * GiB * n for n in range(8)])  # 19 GiB left, 3 GiB a day
    forecast = forecast_fill("/srv", history, TODAY)
    assert forecast.days_left == pytest.approx(19 / 3)
    assert forecast.soon
    assert forecast.fills_on == TODAY + timedelta(days=6)


def test_noisy_use_is_fitted_to_its_trend() -> None:
    rng = random.Random(7)
    trend = [500 * GiB - 4 * GiB * n for n in range(30)]
    noisy = [v + rng.uniform(-6, 6) * GiB for v in trend]
    forecast = forecast_fill("/srv", daily(noisy), TODAY)
    # Today's trend is 384 GiB at 4 GiB a day: 96 days; the noise moves it by days, not weeks.
    assert forecast.bytes_per_day == pytest.approx(4 * GiB, rel=0.15)
    assert forecast.days_left is not None
    assert 80 < forecast.days_left < 115
    assert not forecast.soon


def test_only_the_last_30_days_count() -> None:
    # Fast growth long ago, flat for the last month: it is not filling now.
    old = [900 * GiB - 20 * GiB * n for n in range(40)]
    flat = [100 * GiB] * 30
    forecast = forecast_fill("/srv", daily(old + flat), TODAY)
    assert forecast.samples == 30
    assert forecast.fills_on is None
    assert forecast.days_left is None
    assert forecast.bytes_per_day == pytest.approx(0)


@pytest.mark.parametrize(
    "values",
    [
        [50 * GiB] * 20,  # flat
        [50 * GiB + GiB * n for n in range(20)],  # space being freed
    ],
    ids=["flat", "shrinking use"],
)
def test_flat_or_shrinking_use_never_fills(values: list[float]) -> None:
    forecast = forecast_fill("/srv", daily(values), TODAY)
    assert forecast.enough_history
    assert forecast.fills_on is None
    assert not forecast.soon


@pytest.mark.parametrize(
    "history",
    [
        [],
        [(TODAY, 10 * GiB)],
        [(TODAY - timedelta(days=1), 20 * GiB), (TODAY, 10 * GiB)],
        # three samples, but all within one day's span: no rate worth acting on
        [(TODAY - timedelta(days=1), 30 * GiB), (TODAY, 20 * GiB), (TODAY, 10 * GiB)],
    ],
    ids=["none", "one day", "two days", "one day's span"],
)
def test_too_short_a_history_gives_no_forecast(history: list[tuple[date, int]]) -> None:
    forecast = forecast_fill("/srv", history, TODAY)
    assert not forecast.enough_history
    assert forecast.fills_on is None
    assert not forecast.soon


def test_gaps_in_the_history_are_fitted_by_their_dates() -> None:
    # Samples every third day, 3 GiB a day: the rate is per day, not per sample.
    history = [(TODAY - timedelta(days=d), (60 + 3 * d) * GiB) for d in range(0, 30, 3)]
    forecast = forecast_fill("/srv", history, TODAY)
    assert forecast.bytes_per_day == pytest.approx(3 * GiB)
    assert forecast.days_left == pytest.approx(20)


def test_so_slow_it_never_matters_is_not_a_date() -> None:
    history = daily([10_000 * GiB - 1024 * n for n in range(30)])
    forecast = forecast_fill("/srv", history, TODAY)
    assert forecast.fills_on is None


def test_full_already_fills_today() -> None:
    history = daily([3 * GiB, 2 * GiB, 1 * GiB, 0, 0])
    forecast = forecast_fill("/srv", history, TODAY)
    assert forecast.days_left is not None
    assert forecast.days_left <= 1
    assert forecast.soon
    assert FILL_WARNING_DAYS == 14


def test_history_series_per_vm_store_total_and_free_space() -> None:
    d0 = TODAY - timedelta(days=2)
    samples = []
    for n in range(3):
        day = d0 + timedelta(days=n)
        samples += [
            UsageSample(day, SampleKind.VM, "uuid-a", "web-01", disk_bytes=(n + 1) * GiB),
            UsageSample(day, SampleKind.VM, "uuid-b", "db-01", disk_bytes=GiB, backup_bytes=GiB),
            UsageSample(
                day,
                SampleKind.STORE,
                "/backups",
                "/backups",
                backup_bytes=5 * GiB,
                free_bytes=(50 - n) * GiB,
            ),
            UsageSample(
                day,
                SampleKind.FILESYSTEM,
                "/var/lib/libvirt",
                "/var/lib/libvirt",
                free_bytes=(90 - 2 * n) * GiB,
            ),
        ]
    # The VM renamed on the last day: one line, under its newest name.
    samples.append(UsageSample(TODAY, SampleKind.VM, "uuid-a", "web-01-new", disk_bytes=4 * GiB))
    history = build_history(samples, TODAY - timedelta(days=89), TODAY)
    assert [s.label for s in history.vms] == ["db-01", "web-01-new"]
    web = history.vms[1]
    assert [v for _, v in web.points] == [GiB, 2 * GiB, 4 * GiB]  # the later sample replaced
    assert history.store is not None
    assert [v for _, v in history.store.points] == [5 * GiB] * 3
    # Each byte once: db-01's restore points are inside the store's 5 GiB.
    assert [v for _, v in history.total.points] == [7 * GiB, 8 * GiB, 10 * GiB]
    assert {s.label for s in history.free} == {"/backups", "/var/lib/libvirt"}
    forecasts = {f.where: f for f in forecasts_from(history, TODAY)}
    assert forecasts["/var/lib/libvirt"].bytes_per_day == pytest.approx(2 * GiB)
    assert forecasts["/backups"].days_left == pytest.approx(48)


def test_what_the_store_saved() -> None:
    usage = StoreUsage(
        where="/backups",
        points=3,
        logical_bytes=300,
        referenced_bytes=120,
        unique_bytes=50,
        stored_bytes=40,
        garbage_bytes=10,
        chunks=6,
        free_bytes=1000,
        total_bytes=2000,
    )
    assert usage.zeros_skipped_bytes == 180
    assert usage.dedup_saved_bytes == 70
    assert usage.compression_saved_bytes == 20  # 50 of data in 30 bytes of live chunks
    assert usage.saved_bytes == 270


def test_internal_snapshot_estimate_shares_the_image_out() -> None:
    # 10 GiB image, 2 GiB of it memory states, 3 snapshots and the current state.
    assert internal_disk_estimate(10 * GiB, 2 * GiB, 3, 1) == 2 * GiB
    assert internal_disk_estimate(10 * GiB, 2 * GiB, 3, 3) == 6 * GiB
    assert internal_disk_estimate(None, 0, 3, 1) == 0
    assert internal_disk_estimate(10 * GiB, 0, 0, 1) == 0
