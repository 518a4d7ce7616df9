"""The usage chart: a PNG that decodes, with a line per VM, the store and the total, and each
filesystem's free space with its forecast line reaching zero on the day it fills."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pytest
from matplotlib.dates import date2num
from matplotlib.image import imread

from core.adapters.charts import MatplotlibCharts, draw_usage, forecast_points
from core.domain.usage import SampleKind, UsageSample, build_history, forecasts_from

GiB = 1024**3
TODAY = date(2026, 6, 30)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def samples(days: int = 20) -> list[UsageSample]:
    found = []
    for n in range(days):
        day = TODAY - timedelta(days=days - 1 - n)
        found += [
            UsageSample(day, SampleKind.VM, "uuid-web", "web-01", disk_bytes=(10 + n) * GiB),
            UsageSample(day, SampleKind.VM, "uuid-db", "db-01", disk_bytes=30 * GiB),
            UsageSample(
                day,
                SampleKind.STORE,
                "/backups",
                "/backups",
                backup_bytes=(5 + n) * GiB,
                free_bytes=400 * GiB,
            ),
            # 3 GiB less free a day, 40 GiB left today: fills in about 13 days.
            UsageSample(
                day,
                SampleKind.FILESYSTEM,
                "/var/lib/libvirt",
                "/var/lib/libvirt",
                free_bytes=(40 + 3 * (days - 1 - n)) * GiB,
            ),
        ]
    return found


def test_the_figure_has_every_series_and_the_forecast_lines() -> None:
    history = build_history(samples(), TODAY - timedelta(days=89), TODAY)
    forecasts = forecasts_from(history, TODAY)
    figure = draw_usage(history, forecasts)
    used, free = figure.axes
    lines = {line.get_label(): line for line in used.get_lines()}
    assert set(lines) == {"web-01", "db-01", "/backups", "total"}
    web = lines["web-01"].get_ydata()
    assert list(web) == pytest.approx([float(10 + n) for n in range(20)])  # GiB
    total = lines["total"].get_ydata()
    assert total[-1] == pytest.approx(29 + 30 + 24)
    assert len(lines["total"].get_xdata()) == 20

    free_lines = {line.get_label(): line for line in free.get_lines()}
    assert set(free_lines) == {
        "/var/lib/libvirt",
        "forecast /var/lib/libvirt",
        "/backups",
        "forecast /backups",
    }
    libvirt = next(f for f in forecasts if f.where == "/var/lib/libvirt")
    assert libvirt.soon
    forecast_line = free_lines["forecast /var/lib/libvirt"]
    xs, ys = forecast_line.get_xdata(), forecast_line.get_ydata()
    assert ys[0] == pytest.approx(40, abs=0.01)
    assert ys[-1] == 0
    fill_day = TODAY + timedelta(days=libvirt.days_left or 0)
    assert date2num(xs[-1]) == pytest.approx(date2num(fill_day), abs=0.01)
    # The store is not filling: its line stays flat to the end of the reach.
    flat = free_lines["forecast /backups"].get_ydata()
    assert flat[0] == pytest.approx(flat[-1])


def test_the_png_is_valid_and_decodes() -> None:
    history = build_history(samples(), TODAY - timedelta(days=89), TODAY)
    png = MatplotlibCharts().render_usage(history, forecasts_from(history, TODAY))
    assert png.startswith(PNG_SIGNATURE)
    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] == 700
    assert pixels.shape[1] == 1000
    assert pixels.std() > 0.05  # not a blank image


def test_an_empty_history_still_renders() -> None:
    history = build_history([], TODAY - timedelta(days=89), TODAY)
    png = MatplotlibCharts().render_usage(history, [])
    assert png.startswith(PNG_SIGNATURE)
    figure = draw_usage(history, [])
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["total"]


def test_a_short_history_has_no_forecast_line() -> None:
    history = build_history(samples(2), TODAY - timedelta(days=89), TODAY)
    forecasts = forecasts_from(history, TODAY)
    assert all(forecast_points(f) == () for f in forecasts)
    labels = [line.get_label() for line in draw_usage(history, forecasts).axes[1].get_lines()]
    assert not any(label.startswith("forecast") for label in labels)
