"""Slack's own surfaces: the restore modal, the buttons, and the App Home tab."""

from __future__ import annotations

from bot.messages.format import human_bytes, when
from bot.mrkdwn import literal
from core.domain.hosts import qualified
from core.domain.snapshot import CatalogueStatus
from core.services.snapshots import VmSnapshots

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


def home_header(vm_count: int, snapshot_count: int, disk_bytes: int, memory_bytes: int) -> str:
    return (
        f"{vm_count} VM(s) you may act on · {snapshot_count} snapshot(s) · disk images "
        f"{human_bytes(disk_bytes)} · saved memory {human_bytes(memory_bytes)}"
    )


def home_vm(group: VmSnapshots, *, with_host: bool = False) -> str:
    """One VM of the Home tab; ``with_host`` names it as ``hv1/web-01`` (several hosts)."""
    state = group.vm.state.value if group.vm else "no longer exists"
    busy = (
        f" · busy: {group.busy.operation_kind} by {literal(group.busy.requested_by)}"
        if group.busy
        else ""
    )
    name = group.vm_name
    if with_host and group.vm is not None:
        name = qualified(group.vm.host, group.vm_name)
    elif with_host:
        state = "not on any host that answers"
    lines = [f"*{literal(name)}* ({state}){busy}"]
    newest = sorted(group.snapshots, key=lambda s: s.created_at, reverse=True)
    for s in newest[:10]:
        kind = "disk+memory" if s.has_memory else "disk"
        hold = " · held" if s.held else ""
        size = f" · {human_bytes(s.memory_bytes)} memory" if s.has_memory else ""
        if s.kind.in_backup_store:
            kind = f"{s.kind.value} disk"
            size = f" · added {human_bytes(s.added_bytes)}"
        missing = " · MISSING" if s.status is CatalogueStatus.MISSING else ""
        missing += " · DAMAGED" if s.damage else ""
        lines.append(f"• `{literal(s.label)}` {when(s.created_at)} · {kind}{size}{hold}{missing}")
    if len(newest) > 10:
        lines.append(f"… and {len(newest) - 10} older (/snapshot list {literal(group.vm_name)})")
    if not newest:
        lines.append("no snapshots")
    return "\n".join(lines)


def home_nothing_visible() -> str:
    return (
        "You have no role on any VM yet. Ask a snapbot admin to grant you one "
        "(viewer, operator, restorer or admin)."
    )
