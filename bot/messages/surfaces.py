"""Slack's own surfaces: the restore modal, the buttons, and the App Home tab."""

from __future__ import annotations

from bot.messages.format import human_bytes, when
from bot.messages.storage import forecast_line
from bot.mrkdwn import literal
from core.domain.hosts import qualified
from core.domain.snapshot import CatalogueStatus
from core.domain.usage import UsageSample
from core.services.overview import StorageGlance, VmOverview

# Slack surfaces: modal and button wording (Slack limits titles and buttons to 24 characters).
RESTORE_MODAL_TITLE = "Restore VM"
RESTORE_MODAL_SUBMIT = "Restore"
PICK_MODAL_TITLE = "Choose a snapshot"
PICK_MODAL_SUBMIT = "Next"
PICK_LABEL = "Snapshot to restore"
MODAL_CLOSE = "Cancel"
LOADING_TITLE = "snapbot"
LOADING_TEXT = "Looking up the VM and its snapshots…"
SAFETY_CHECKBOX = "Take a safety snapshot of the current state first"
SAFETY_HINT = "Lets you undo this restore by restoring the safety snapshot."
CONFIRM_LABEL = "Type VM name to confirm"
CONFIRM_BUTTON = "Confirm"
CANCEL_BUTTON = "Cancel"
HOME_TITLE = "snapbot"


def modal_refusal(text: str) -> str:
    return f"Cannot restore: {text}"


def modal_failed(error: str) -> str:
    return (
        f"Could not open the confirmation dialog ({error}). Slack gives 3 seconds to open it; "
        "run the command again."
    )


def restore_request_unknown() -> str:
    return "This restore request is no longer known; close this and run /restore again."


def home_header(
    vm_count: int, snapshot_count: int, disk_bytes: int | None, memory_bytes: int
) -> str:
    """The Home tab's first line; ``disk_bytes`` None: storage not measured yet."""
    disk = "" if disk_bytes is None else f" · disk images {human_bytes(disk_bytes)}"
    return (
        f"{vm_count} VM(s) you may act on · {snapshot_count} snapshot(s){disk} · "
        f"saved memory {human_bytes(memory_bytes)}"
    )


def home_storage(
    storage: StorageGlance, *, disk_bytes: int, memory_bytes: int, whole_host: bool
) -> str:
    """The Home tab's storage lines, from the latest daily samples: ``disk_bytes`` of the VMs
    the person sees, their ``memory_bytes``; the filesystems holding VMs' disks only for
    ``whole_host`` (someone who sees every VM: the samples do not say whose disks are where).
    """
    parts = [
        f"*Storage* · disk images {human_bytes(disk_bytes)} (memory states "
        f"{human_bytes(memory_bytes)})"
    ]
    store = storage.store
    if store is not None:
        parts.append(
            f"backup store {human_bytes(store.backup_bytes or 0)} stored for "
            f"{human_bytes(store.logical_bytes or 0)} logical"
        )
    lines = [" · ".join(parts)]
    shown = [*(storage.filesystems if whole_host else ()), *([store] if store else [])]
    for place in shown:
        lines.append(f"• {literal(place.name)}: {_sampled_free(place)}")
    wheres = {p.name for p in shown}
    lines += [f"⚠ {forecast_line(f)}" for f in storage.forecasts if f.soon and f.where in wheres]
    lines.append(
        f"_Storage as sampled on {storage.day.isoformat()} (daily); "
        "/snapshot usage measures it now._"
    )
    return "\n".join(lines)


def _sampled_free(place: UsageSample) -> str:
    free, used = place.free_bytes, place.used_bytes
    if free is None:
        return "free space unknown"
    if used is not None and used + free:
        share = 100 * free / (used + free)
        return f"{human_bytes(free)} free of {human_bytes(used + free)} ({share:.0f}%)"
    return f"{human_bytes(free)} free"


def home_not_sampled() -> str:
    return (
        "_Storage has not been sampled yet (snapbot samples it once a day); "
        "/snapshot usage measures it now._"
    )


def home_vm(vm: VmOverview, *, with_host: bool = False) -> str:
    """One VM of the Home tab with its newest snapshots (``vm.newest``); ``with_host`` names it
    as ``hv1/web-01`` (several hosts)."""
    state = vm.vm.state.value if vm.vm else "no longer exists"
    busy = (
        f" · busy: {vm.busy.operation_kind} by {literal(vm.busy.requested_by)}" if vm.busy else ""
    )
    name = vm.vm_name
    if with_host and vm.vm is not None:
        name = qualified(vm.vm.host, vm.vm_name)
    elif with_host:
        state = "not on any host that answers"
    lines = [f"*{literal(name)}* ({state}){busy}"]
    for s in vm.newest:
        kind = "disk+memory" if s.has_memory else "disk"
        hold = " · held" if s.held else ""
        size = f" · {human_bytes(s.memory_bytes)} memory" if s.has_memory else ""
        if s.kind.in_backup_store:
            kind = f"{s.kind.value} disk"
            size = f" · added {human_bytes(s.added_bytes)}"
        missing = " · MISSING" if s.status is CatalogueStatus.MISSING else ""
        missing += " · DAMAGED" if s.damage else ""
        lines.append(f"• `{literal(s.label)}` {when(s.created_at)} · {kind}{size}{hold}{missing}")
    if vm.older:
        lines.append(f"… and {vm.older} older (/snapshot list {literal(vm.vm_name)})")
    if not vm.tally.total:
        lines.append("no snapshots")
    return "\n".join(lines)


def home_nothing_visible() -> str:
    return (
        "You have no role on any VM yet. Ask a snapbot admin to grant you one "
        "(viewer, operator, restorer or admin)."
    )
