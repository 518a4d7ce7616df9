"""Confirmations: a destructive request shown to a person, run only when that person confirms.

The restore modal, the prune preview's Confirm button and the delete Confirm button each carry
a confirmation id. Claiming it is a compare-and-set in the catalogue, so a double submission, a
replayed request or a second click runs the action at most once, even across processes.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Long enough to read a preview and type a name; short enough that a stale preview is not
# confirmed tomorrow after the snapshots have changed.
CONFIRMATION_TTL = timedelta(minutes=15)


class ConfirmationKind(enum.Enum):
    RESTORE = "restore"
    PRUNE = "prune"
    DELETE = "delete"
    UNLOCK = "unlock"


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What will run on confirm. ``payload`` holds the request's details (VM, snapshot, the
    exact list a prune preview showed) so confirm runs what was shown, not a fresh guess."""

    id: str
    kind: ConfirmationKind
    requested_by: str
    created_at: datetime
    expires_at: datetime
    payload: dict[str, object] = field(default_factory=dict)
    vm_name: str | None = None
    team: str | None = None
    channel: str | None = None
    used_at: datetime | None = None
    used_by: str | None = None


_ID = re.compile(r"[0-9a-f]{32}")


def is_confirmation_id(text: str) -> bool:
    """Whether ``text`` could be an id ``new_confirmation`` made. A button's value and a modal's
    metadata come back from Slack: anything else names no confirmation, and is not looked up."""
    return _ID.fullmatch(text) is not None


def new_confirmation(
    kind: ConfirmationKind,
    requested_by: str,
    now: datetime,
    *,
    payload: dict[str, object],
    vm_name: str | None = None,
    team: str | None = None,
    channel: str | None = None,
) -> Confirmation:
    return Confirmation(
        id=secrets.token_hex(16),
        kind=kind,
        requested_by=requested_by,
        created_at=now,
        expires_at=now + CONFIRMATION_TTL,
        payload=payload,
        vm_name=vm_name,
        team=team,
        channel=channel,
    )
