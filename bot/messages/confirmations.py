"""Typing the VM's name or pressing Confirm: the prompt, a mismatch, a cancel, who confirmed."""

from __future__ import annotations

from bot.messages.format import mention
from bot.mrkdwn import literal

CONFIRM_PROMPT = "Type VM name to confirm: "
NEW_VM_CONFIRM_LABEL = "Type the new VM's name to confirm"


def new_vm_confirm_prompt(name: str) -> str:
    """A restore that defines a VM (a copy): the name typed is the new VM's."""
    return f"Type the new VM's name ({literal(name)}) to confirm: "


def typed_mismatch(action: str, expected: str, typed: str) -> str:
    shown = typed if typed else "nothing"
    return (
        f"{action} cancelled: you typed {literal(repr(shown))}, not {literal(repr(expected))}. "
        "Nothing was changed."
    )


def restore_cancelled(vm: str, typed: str) -> str:
    shown = typed if typed else "nothing"
    return (
        f"Restore cancelled: you typed {literal(repr(shown))}, not the VM name "
        f"{literal(repr(vm))}. Nothing was changed."
    )


def cancelled(action: str, vm: str | None) -> str:
    on = f" of {literal(vm)}" if vm else ""
    return f"{action.capitalize()}{on} cancelled. Nothing was changed."


def typed_name_error(vm: str) -> str:
    """Shown under the confirmation input when the typed name is not the VM's."""
    return f"Type the VM name exactly as shown: {vm}"


def confirmed_by(user: str, action: str) -> str:
    return f"{action.capitalize()} confirmed by {mention(user)}; progress is posted in the channel."
