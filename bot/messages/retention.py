"""Pruning: the preview (keep or delete, and why), its confirmation, and what was deleted."""

from __future__ import annotations

from collections.abc import Sequence

from bot.messages.errors import error_text, hold_placed_by
from bot.messages.format import human_bytes, when
from bot.messages.storage import reclaim_line
from bot.mrkdwn import literal
from core.domain.usage import ReclaimEstimate
from core.errors import SnapshotHeld
from core.services.pruning import PrunePreview, VmPruneResult


def prune_confirm_prompt(expected: str) -> str:
    return f"Type {literal(expected)} to confirm the deletions: "


def prune_nothing_confirmed(*, dry_run: bool) -> str:
    if dry_run:
        return "Dry run: nothing was deleted. Run it again without --dry-run to prune."
    return "Nothing to prune."


def prune_preview(
    preview: PrunePreview, *, dry_run: bool, reclaim: ReclaimEstimate | None = None
) -> str:
    """Every snapshot with keep or delete and the reason, per VM, and what deleting frees
    (``reclaim``: the whole of it, exact where it can be, else estimated)."""
    lines = [
        f"Prune preview ({preview.policy.describe()}; {preview.policy.describe_scope()}; "
        f"periods in {preview.timezone})"
        + (" — dry run, nothing will be deleted" if dry_run else "")
    ]
    if not preview.plans:
        lines.append("No snapshots to consider.")
    total = 0
    for plan in preview.plans:
        lines.append(f"*{literal(plan.vm.name)}*")
        for d in plan.decisions:
            mark = "keep  " if d.keep else "DELETE"
            lines.append(
                f"  {mark} {literal(d.snapshot.label):<28} {when(d.snapshot.created_at)}  "
                f"{literal(d.reason)}"
            )
        if plan.refused:
            lines.append(f"  Nothing will be deleted: {literal(plan.refused)}")
        elif plan.to_delete:
            total += plan.memory_bytes_freed
            lines.append(
                f"  {len(plan.to_delete)} to delete; frees at least "
                f"{human_bytes(plan.memory_bytes_freed)} of saved memory, plus disk blocks no "
                "other snapshot uses (measured when deleted)"
            )
        else:
            lines.append("  Nothing to delete.")
    count = sum(len(p.to_delete) for p in preview.plans)
    if count and reclaim is not None:
        lines.append(reclaim_line(reclaim))
    if count and not dry_run:
        lines.append(
            f"Confirm to delete {count} snapshot(s) (at least {human_bytes(total)} freed). "
            "Nothing is deleted before you confirm."
        )
    return "\n".join(lines)


def prune_result(results: Sequence[VmPruneResult]) -> str:
    if not results:
        return "Prune: nothing was deleted."
    lines = ["Prune finished:"]
    for r in results:
        if r.skipped:
            lines.append(f"  {literal(r.vm_name)}: skipped, {literal(r.skipped)}")
            continue
        lines.append(
            f"  {literal(r.vm_name)}: deleted {len(r.deleted)}, freed "
            f"{human_bytes(r.freed_bytes)}"
            + "".join(f"\n    - {literal(d.snapshot.label)}" for d in r.deleted)
        )
        if r.kept_since_preview:
            lines.append(
                f"    kept {len(r.kept_since_preview)} that changed since the preview "
                "(held or renamed, or the policy now keeps them)"
            )
        lines.extend(held_during_prune(h) for h in r.held)
        for label, error in r.failed:
            lines.append(f"    could not delete {literal(label)}: {error_text(error)}")
    return "\n".join(lines)


def held_during_prune(error: SnapshotHeld) -> str:
    return (
        f"    kept `{literal(error.label)}`: held after the plan was made ({error.hold}, "
        f"{hold_placed_by(error)}); a hold wins over the prune"
    )
