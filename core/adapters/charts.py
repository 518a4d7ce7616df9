"""``ChartRenderer`` on matplotlib: the usage history as a PNG. The only module that imports
matplotlib (an import-linter contract says so).

Uses the object API (``Figure`` with an Agg canvas), never ``pyplot``: pyplot keeps global
state that threads rendering at once would share, and may pick a GUI backend on a desktop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, timedelta

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib: no display on a server

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from core.domain.usage import Forecast, Series, UsageHistory

GIB = 1024**3
# How far past the last day a filesystem's forecast line reaches when it does not fill sooner.
FORECAST_REACH_DAYS = 30
_DPI = 100
_SIZE_INCHES = (10.0, 7.0)


def _gib(points: Sequence[tuple[date, float]]) -> tuple[list[date], list[float]]:
    return [d for d, _ in points], [float(v) / GIB for _, v in points]


def forecast_points(forecast: Forecast) -> tuple[tuple[date, float], ...]:
    """The forecast line: from its day at the fitted free space to the day it fills (zero),
    or ``FORECAST_REACH_DAYS`` on when it does not fill within that; empty when there is no
    fitted line (history too short)."""
    if not forecast.enough_history or forecast.fitted_free_today is None:
        return ()
    if forecast.today is None:
        return ()
    start = (forecast.today, forecast.fitted_free_today)
    if forecast.days_left is not None and forecast.days_left <= FORECAST_REACH_DAYS:
        end_day = forecast.today + timedelta(days=forecast.days_left)
        return (start, (end_day, 0.0))
    reach = forecast.today + timedelta(days=FORECAST_REACH_DAYS)
    free = forecast.fitted_free_today - forecast.bytes_per_day * FORECAST_REACH_DAYS
    return (start, (reach, max(0.0, free)))


def draw_usage(history: UsageHistory, forecasts: Sequence[Forecast]) -> Figure:
    """The chart as a figure, not yet rendered: above, bytes per VM, the store and the total;
    below, each filesystem's free space and its forecast. Each line's label is the VM's name,
    the store's or filesystem's path, ``total``, or ``forecast <path>``."""
    figure = Figure(figsize=_SIZE_INCHES, dpi=_DPI, layout="constrained")
    used, free = figure.subplots(2, 1, sharex=True)
    lines: list[Series] = [*history.vms]
    if history.store is not None:
        lines.append(history.store)
    for line in lines:
        used.plot(*_gib(line.points), label=line.label, linewidth=1.2)
    used.plot(*_gib(history.total.points), label="total", linewidth=2.4, color="black")
    used.set_ylabel("GiB used")
    used.grid(True, alpha=0.3)
    for line in history.free:
        (drawn,) = free.plot(*_gib(line.points), label=line.label, linewidth=1.2)
        forecast = next((f for f in forecasts if f.where == line.label), None)
        if forecast is None:
            continue
        points = forecast_points(forecast)
        if points:
            free.plot(
                *_gib(points),
                label=f"forecast {line.label}",
                linestyle="--",
                color=drawn.get_color(),
            )
    free.set_ylabel("GiB free")
    free.set_ylim(bottom=0)
    free.grid(True, alpha=0.3)
    for axes in (used, free):
        if axes.lines:
            axes.legend(loc="upper left", fontsize="small")
        axes.set_xlim(history.start, history.end + timedelta(days=1))
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    free.xaxis.set_major_locator(locator)
    free.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    # Forecast lines may reach past the history's end: show where they go.
    ends = [p[-1][0] for p in (forecast_points(f) for f in forecasts) if p]
    if ends:
        free.set_xlim(history.start, max([history.end + timedelta(days=1), *ends]))
    return figure


def render_png(figure: Figure) -> bytes:
    out = io.BytesIO()
    FigureCanvasAgg(figure).print_png(out)  # type: ignore[no-untyped-call]
    return out.getvalue()


class MatplotlibCharts:
    """``ChartRenderer``: blocking (CPU-bound); the usage service calls it in a thread."""

    def render_usage(self, history: UsageHistory, forecasts: Sequence[Forecast]) -> bytes:
        return render_png(draw_usage(history, forecasts))
