"""Storage usage: ``/snapshot usage``, the Home tab's summary, the weekly usage report, the
warning that a filesystem is about to fill, and what deleting or pruning would give back."""

from __future__ import annotations

from datetime import date

from bot.messages.format import human_bytes, when
from bot.mrkdwn import literal
from core.domain.usage import (
    FILL_WARNING_DAYS,
    FilesystemUsage,
    Forecast,
    ReclaimEstimate,
    StoreUsage,
    UsageReport,
    VmUsage,
)

CHART_TITLE = "Storage usage, last 90 days"


def _days(days: float) -> str:
    whole = max(0, round(days))
    return "less than a day" if days < 1 else f"{whole} day" + ("" if whole == 1 else "s")


def _rate(bytes_per_day: float) -> str:
    return f"{human_bytes(round(abs(bytes_per_day)))}/day"


def forecast_line(forecast: Forecast) -> str:
    """``/var/lib/libvirt/images fills in about 23 days at the current rate (2026-12-19)``."""
    where = literal(forecast.where)
    if not forecast.enough_history:
        return (
            f"{where}: not enough history for a forecast yet ({forecast.samples} daily "
            "sample(s); one is taken each day)"
        )
    if forecast.days_left is None:
        if forecast.bytes_per_day > 0:
            return f"{where}: shrinking slowly ({_rate(forecast.bytes_per_day)}), no fill in sight"
        return f"{where}: not growing"
    if forecast.days_left <= 0:
        return f"{where}: full, or about to be, at the current rate"
    fills = f" ({forecast.fills_on.isoformat()})" if forecast.fills_on else ""
    flag = " — WARNING" if forecast.soon else ""
    return (
        f"{where} fills in about {_days(forecast.days_left)} at the current rate "
        f"({_rate(forecast.bytes_per_day)}){fills}{flag}"
    )


def _free(fs: FilesystemUsage) -> str:
    if fs.free_bytes is None:
        reason = f" ({literal(fs.unknown_because)})" if fs.unknown_because else ""
        return f"free space unknown{reason}"
    if fs.total_bytes:
        share = 100 * fs.free_bytes / fs.total_bytes
        return f"{human_bytes(fs.free_bytes)} free of {human_bytes(fs.total_bytes)} ({share:.0f}%)"
    return f"{human_bytes(fs.free_bytes)} free"


def filesystem_line(fs: FilesystemUsage) -> str:
    users = f" — disks of {', '.join(literal(v) for v in fs.vms)}" if fs.vms else ""
    return f"• {literal(fs.where)} ({fs.role.value}): {_free(fs)}{users}"


def vm_line(vm: VmUsage) -> str:
    disk = human_bytes(vm.disk_bytes)
    memory = ""
    if vm.full_snapshots:
        memory = (
            f", of which memory states {human_bytes(vm.memory_state_bytes)} "
            f"({vm.full_snapshots} full snapshot(s))"
        )
    backup = "no restore points in the backup store"
    if vm.backup.points:
        backup = (
            f"{vm.backup.points} restore point(s): {human_bytes(vm.backup.logical_bytes)} "
            f"logical, added {human_bytes(vm.backup.added_bytes)} to the store, "
            f"{human_bytes(vm.backup.exclusive_bytes)} only theirs"
        )
    return f"• *{literal(vm.vm_name)}*: disk images {disk}{memory}; {backup}"


def store_lines(store: StoreUsage) -> list[str]:
    free = (
        "free space unknown"
        if store.free_bytes is None
        else f"{human_bytes(store.free_bytes)} free"
        + (f" of {human_bytes(store.total_bytes)}" if store.total_bytes else "")
    )
    lines = [
        f"*Backup store* {literal(store.where)}: {store.points} restore point(s), {free}",
        f"  logical {human_bytes(store.logical_bytes)} · stored {human_bytes(store.stored_bytes)}"
        f" · saved {human_bytes(store.saved_bytes)} (zeros "
        f"{human_bytes(store.zeros_skipped_bytes)}, deduplication "
        f"{human_bytes(store.dedup_saved_bytes)}, compression "
        f"{human_bytes(store.compression_saved_bytes)})",
    ]
    if store.garbage_bytes:
        lines.append(
            f"  {human_bytes(store.garbage_bytes)} of pieces no restore point uses any more "
            "(freed at the next garbage collection)"
        )
    return lines


def usage_report(report: UsageReport, *, chart_path: str | None = None) -> str:
    """The whole report: VMs, the store, free space everywhere involved, forecasts."""
    subject = literal(report.vm) if report.vm else f"host {literal(report.host)}"
    lines = [f"*Storage usage of {subject}* ({when(report.taken_at)})"]
    if not report.vms:
        lines.append("No VMs you may see.")
    for vm in report.vms:
        lines.append(vm_line(vm))
    if len(report.vms) > 1:
        lines.append(
            f"Total: disk images {human_bytes(report.disk_bytes)}, of which memory states "
            f"{human_bytes(report.memory_state_bytes)}"
        )
    if report.store is not None:
        lines += store_lines(report.store)
    else:
        lines.append("No backup store is configured.")
    if report.filesystems:
        lines.append("*Free space*")
        lines += [filesystem_line(fs) for fs in report.filesystems]
    forecast = {f.where for f in report.forecasts}
    unsampled = [fs for fs in report.filesystems if fs.where not in forecast]
    if report.forecasts or unsampled:
        lines.append("*Forecast*")
        lines += [f"• {forecast_line(f)}" for f in report.forecasts]
        lines += [
            f"• {literal(fs.where)}: not enough history for a forecast yet (a sample is "
            "taken each day)"
            for fs in unsampled
        ]
    if chart_path is not None:
        lines.append(f"Chart of the last 90 days: {chart_path}")
    return "\n".join(lines)


def usage_summary(report: UsageReport) -> str:
    """A few lines for the Home tab."""
    parts = [
        f"*Storage* · disk images {human_bytes(report.disk_bytes)} (memory states "
        f"{human_bytes(report.memory_state_bytes)})"
    ]
    if report.store is not None:
        parts.append(
            f"backup store {human_bytes(report.store.stored_bytes)} stored for "
            f"{human_bytes(report.store.logical_bytes)} logical"
        )
    lines = [" · ".join(parts)]
    for fs in report.filesystems:
        lines.append(f"• {literal(fs.where)}: {_free(fs)}")
    for f in report.filling:
        lines.append(f"⚠ {forecast_line(f)}")
    return "\n".join(lines)


def weekly_usage_report(report: UsageReport) -> str:
    return "*snapbot weekly storage report*\n" + usage_report(report)


def fill_warning(forecasts: tuple[Forecast, ...], today: date) -> str:
    """To the digest channel, at most once a day, while a filesystem is forecast to fill
    within ``FILL_WARNING_DAYS`` days."""
    lines = [
        f"*Storage warning* ({today.isoformat()}): forecast to fill within {FILL_WARNING_DAYS} days"
    ]
    lines += [f"• {forecast_line(f)}" for f in forecasts]
    lines.append(
        "Prune old snapshots (/prune <vm> --dry-run shows what it would free), archive full "
        "snapshots to the backup store, or add space."
    )
    return "\n".join(lines)


def chart_alt(report: UsageReport) -> str:
    """The chart for those who cannot see it."""
    forecasts = "; ".join(forecast_line(f) for f in report.forecasts) or "no forecast"
    return (
        f"Chart of storage used per VM and in total over the last 90 days, with free space "
        f"and its forecast. Now: disk images {human_bytes(report.disk_bytes)}. {forecasts}"
    )


def chart_not_posted(problem: str) -> str:
    return f"(The chart could not be posted here: {literal(problem)}.)"


def chart_saved(path: str) -> str:
    return f"Chart of the last 90 days written to {path}"


def reclaim_line(estimate: ReclaimEstimate) -> str:
    """What deleting frees: exact parts named as exact, the rest said to be an estimate."""
    exact: list[str] = []
    if estimate.memory_bytes:
        exact.append(f"{human_bytes(estimate.memory_bytes)} of memory states")
    if estimate.store_bytes:
        exact.append(f"{human_bytes(estimate.store_bytes)} in the backup store")
    parts = []
    if exact:
        parts.append("exactly " + " and ".join(exact))
    if estimate.disk_estimate_bytes:
        parts.append(
            f"about {human_bytes(estimate.disk_estimate_bytes)} of disk data (an estimate: "
            "libvirt cannot tell which blocks only these snapshots hold)"
        )
    if estimate.memory_unknown:
        parts.append(f"{estimate.memory_unknown} memory state(s) of unknown size")
    if not parts:
        return "Frees: nothing measurable (the pieces are shared with other restore points)."
    return "Frees: " + "; ".join(parts) + "."


def usage_not_measured() -> str:
    return "Storage usage is not measured in this set-up (snapbot was started without it)."


def chart_withheld() -> str:
    return (
        "No chart: it shows every VM on the host, and you may see only some of them. "
        "Ask for one VM's chart with /snapshot usage <vm>."
    )


def chart_failed(problem: str) -> str:
    return f"No chart: drawing it failed ({literal(problem)})."
