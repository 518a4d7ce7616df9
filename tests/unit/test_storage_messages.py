"""The wording of storage usage: forecasts, what deleting frees, the fill warning."""

from __future__ import annotations

from datetime import date

from bot import messages
from core.domain.usage import Forecast, ReclaimEstimate

GiB = 2**30
TODAY = date(2026, 6, 1)


def forecast(days_left: float | None, per_day: float, *, enough: bool = True) -> Forecast:
    fills = None if days_left is None else date(2026, 6, 1 + int(days_left))
    return Forecast("/var/lib/libvirt/images", 40 * GiB, per_day, fills, days_left, 10, enough)


def test_forecast_lines() -> None:
    assert messages.forecast_line(forecast(23.4, 2 * GiB)) == (
        "/var/lib/libvirt/images fills in about 23 days at the current rate (2.0 GiB/day) "
        "(2026-06-24)"
    )
    assert messages.forecast_line(forecast(None, -GiB)) == "/var/lib/libvirt/images: not growing"
    assert messages.forecast_line(forecast(None, 0.0)) == "/var/lib/libvirt/images: not growing"
    soon = messages.forecast_line(forecast(9.6, 4 * GiB))
    assert "fills in about 10 days" in soon
    assert soon.endswith("— WARNING")
    assert "less than a day" in messages.forecast_line(forecast(0.4, 4 * GiB))
    assert "not enough history" in messages.forecast_line(forecast(None, 0.0, enough=False))


def test_reclaim_says_what_is_exact_and_what_is_estimated() -> None:
    exact = ReclaimEstimate(snapshots=2, memory_bytes=512 * 2**20, store_bytes=GiB)
    assert messages.reclaim_line(exact) == (
        "Frees: exactly 512.0 MiB of memory states and 1.0 GiB in the backup store."
    )
    mixed = ReclaimEstimate(snapshots=1, memory_bytes=GiB, disk_estimate_bytes=3 * GiB)
    text = messages.reclaim_line(mixed)
    assert text.startswith("Frees: exactly 1.0 GiB of memory states; about 3.0 GiB of disk data")
    assert "estimate" in text
    shared = ReclaimEstimate(snapshots=1)
    assert "nothing measurable" in messages.reclaim_line(shared)


def test_fill_warning_names_every_filesystem_and_what_to_do() -> None:
    text = messages.fill_warning((forecast(5, 8 * GiB),), TODAY)
    assert text.startswith("*Storage warning* (2026-06-01): forecast to fill within 14 days")
    assert "/var/lib/libvirt/images fills in about 5 days" in text
    assert "/prune <vm> --dry-run" in text
