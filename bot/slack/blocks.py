"""Block Kit for snapbot's Slack surfaces. Wording comes from ``bot.messages``; this module only
lays it out, within Slack's limits (3000 characters a section, 100 blocks a view, 50 a message).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot import messages
from bot.mrkdwn import literal
from bot.previews import StoreRestorePreview
from core.domain.snapshot import Snapshot
from core.services.overview import VmOverview
from core.services.snapshots import RestorePreview, VmSnapshots

Block = dict[str, Any]
View = dict[str, Any]

RESTORE_CALLBACK = "snapbot_restore"
PICK_CALLBACK = "snapbot_pick"
CONFIRM_BLOCK = "confirm"
CONFIRM_INPUT = "typed"
SAFETY_BLOCK = "safety"
SAFETY_INPUT = "safety"
SAFETY_VALUE = "take"
PICK_BLOCK = "pick"
PICK_INPUT = "snapshot"
CONFIRM_ACTION = "snapbot_confirm"
CANCEL_ACTION = "snapbot_cancel"
_SECTION_LIMIT = 2900
_MESSAGE_BLOCKS = 45
_HOME_BLOCKS = 95


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def sections(text: str, *, monospace: bool = False, limit: int = _MESSAGE_BLOCKS) -> list[Block]:
    """``text`` as mrkdwn sections cut at line ends; the last one says what was left out."""
    chunks: list[str] = []
    current = ""
    budget = _SECTION_LIMIT - (8 if monospace else 0)
    for line in text.split("\n"):
        line = line[:budget]
        if current and len(current) + 1 + len(line) > budget:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    if len(chunks) > limit:
        dropped = len(chunks) - limit + 1
        chunks = [*chunks[: limit - 1], f"… {dropped} more part(s) left out; use /snapshot list"]
    fence = "```" if monospace else ""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{fence}{c}{fence}"}}
        for c in chunks
    ]


def loading_view() -> View:
    return {
        "type": "modal",
        "title": _plain(messages.LOADING_TITLE),
        "close": _plain(messages.MODAL_CLOSE),
        "blocks": sections(messages.LOADING_TEXT),
    }


def notice_view(text: str) -> View:
    """A modal that only tells something (a refusal, an error)."""
    return {
        "type": "modal",
        "title": _plain(messages.LOADING_TITLE),
        "close": _plain(messages.MODAL_CLOSE),
        "blocks": sections(text, limit=90),
    }


def restore_view(
    preview: RestorePreview | StoreRestorePreview,
    metadata: dict[str, str],
    safety: bool | None,
    typed_name: str,
) -> View:
    """The typed-name confirmation: the warning, the safety checkbox (``safety`` None: the
    restore changes no existing VM, so there is none), the name input."""
    option = {
        "text": _plain(messages.SAFETY_CHECKBOX),
        "description": _plain(messages.SAFETY_HINT),
        "value": SAFETY_VALUE,
    }
    checkboxes: dict[str, Any] = {
        "type": "checkboxes",
        "action_id": SAFETY_INPUT,
        "options": [option],
    }
    if safety:
        checkboxes["initial_options"] = [option]
    safety_block: list[Block] = [
        {
            "type": "input",
            "block_id": SAFETY_BLOCK,
            "optional": True,
            "label": _plain(" "),
            "element": checkboxes,
        }
    ]
    return {
        "type": "modal",
        "callback_id": RESTORE_CALLBACK,
        "notify_on_close": True,
        "private_metadata": json.dumps(metadata),
        "title": _plain(messages.RESTORE_MODAL_TITLE),
        "submit": _plain(messages.RESTORE_MODAL_SUBMIT),
        "close": _plain(messages.MODAL_CLOSE),
        "blocks": [
            *sections(messages.restore_warning(preview), limit=90),
            *(safety_block if safety is not None else []),
            {
                "type": "input",
                "block_id": CONFIRM_BLOCK,
                "label": _plain(
                    messages.NEW_VM_CONFIRM_LABEL
                    if isinstance(preview, StoreRestorePreview) and preview.as_name
                    else messages.CONFIRM_LABEL
                ),
                "element": {
                    "type": "plain_text_input",
                    "action_id": CONFIRM_INPUT,
                    "placeholder": _plain(typed_name),
                },
            },
        ],
    }


def pick_view(group: VmSnapshots, metadata: dict[str, str]) -> View:
    """``/restore <vm>``: choose a snapshot, newest first (Slack allows 100 options)."""
    newest: Sequence[Snapshot] = sorted(group.snapshots, key=lambda s: s.created_at, reverse=True)
    options = [
        {
            "text": _plain(f"{s.label} · {messages.when(s.created_at)} · {s.kind.value}"[:75]),
            "value": s.label,
        }
        for s in newest[:100]
    ]
    return {
        "type": "modal",
        "callback_id": PICK_CALLBACK,
        "private_metadata": json.dumps(metadata),
        "title": _plain(messages.PICK_MODAL_TITLE),
        "submit": _plain(messages.PICK_MODAL_SUBMIT),
        "close": _plain(messages.MODAL_CLOSE),
        "blocks": [
            *sections(f"*{literal(group.vm_name)}*"),
            {
                "type": "input",
                "block_id": PICK_BLOCK,
                "label": _plain(messages.PICK_LABEL),
                "element": {"type": "static_select", "action_id": PICK_INPUT, "options": options},
            },
        ],
    }


def confirm_message(text: str, confirmation_id: str, *, danger_label: str) -> list[Block]:
    """A preview with Confirm / Cancel buttons carrying the confirmation id."""
    return [
        *sections(text, monospace=True),
        {
            "type": "actions",
            "block_id": "confirmation",
            "elements": [
                {
                    "type": "button",
                    "action_id": CONFIRM_ACTION,
                    "style": "danger",
                    "text": _plain(danger_label),
                    "value": confirmation_id,
                },
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "text": _plain(messages.CANCEL_BUTTON),
                    "value": confirmation_id,
                },
            ],
        },
    ]


def home_capacity(header: str) -> int:
    """How many VMs ``home_view`` shows under ``header``: a view holds 100 blocks, a VM takes
    two (a divider and its section), and one is kept for the line saying there are more."""
    return max(0, (_HOME_BLOCKS - 1 - len(sections(header)) - 1) // 2)


def home_view(
    header: str, vms: Sequence[VmOverview], *, with_host: bool = False, more: int = 0
) -> View:
    """The Home tab: ``header``, then ``vms`` (at most ``home_capacity(header)`` of them) and,
    when ``more`` VMs were left out, where to see them."""
    blocks: list[Block] = [
        {"type": "header", "text": _plain(messages.HOME_TITLE)},
        *sections(header),
    ]
    for vm in vms:
        blocks.append({"type": "divider"})
        blocks.extend(sections(messages.home_vm(vm, with_host=with_host), limit=3))
        if len(blocks) > _HOME_BLOCKS:
            blocks = blocks[:_HOME_BLOCKS]
            more = max(more, 1)
            break
    if more:
        blocks.extend(sections("… more VMs: /snapshot list"))
    return {"type": "home", "blocks": blocks}
