"""Holds: placing and ending one, the reminder with its buttons, and the verification."""

from __future__ import annotations

from bot.messages.errors import error_text
from bot.messages.format import mention, when
from bot.mrkdwn import literal
from core.domain.snapshot import Snapshot
from core.errors import CoreError


def held(snapshot: Snapshot) -> str:
    hold = snapshot.hold.describe() if snapshot.hold else "held"
    return (
        f"`{literal(snapshot.label)}` of {literal(snapshot.vm_name)} is now {hold}: retention "
        f"will not delete it. End it with /snapshot release {literal(snapshot.vm_name)} "
        f"{literal(snapshot.label)}."
    )


def not_held_after_create(snapshot: Snapshot, error: CoreError) -> str:
    """``--hold``: the snapshot exists, but holding it failed (someone else got the VM first)."""
    return (
        f"The snapshot was taken, but it is *not held*: {error_text(error)}\n"
        f"Hold it with /snapshot hold {literal(snapshot.vm_name)} {literal(snapshot.label)} "
        "--until-verified"
    )


def released(snapshot: Snapshot) -> str:
    return (
        f"`{literal(snapshot.label)}` of {literal(snapshot.vm_name)} is no longer held; "
        "retention rules apply "
        "to it again."
    )


def hold_reminder(snapshot: Snapshot) -> str:
    return (
        f"Reminder: `{literal(snapshot.label)}` of {literal(snapshot.vm_name)} "
        f"(taken {when(snapshot.created_at)}) "
        "is held until you verify the change it guards. Is the change good? *Verified* ends "
        "the hold; *Restore* goes back to the snapshot."
    )


def verify_prompt(snapshot: Snapshot) -> str:
    return (
        f"`{literal(snapshot.label)}` of {literal(snapshot.vm_name)} is held until you verify "
        "the change it "
        "guards. When the change is good, press *Verified* (the hold ends and retention may "
        "prune it later); if it went wrong, *Restore* goes back to it. You will be reminded "
        "every 24 h until then."
    )


VERIFIED_BUTTON = "Verified"
RESTORE_BUTTON = "Restore"


def verified(snapshot: Snapshot, user: str) -> str:
    return (
        f"{mention(user)} verified the change: `{literal(snapshot.label)}` of "
        f"{literal(snapshot.vm_name)} is released."
    )
