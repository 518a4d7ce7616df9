"""Confirmations: a destructive request shown to a person, run only when that person confirms.

The restore modal, the prune preview's Confirm button and the delete Confirm button each carry
a confirmation id. Claiming it is a compare-and-set in the catalogue, so a double submission, a
replayed request or a second click runs the action at most once, even across processes.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.errors import InvalidInput

# Long enough to read a preview and type a name; short enough that a stale preview is not
# confirmed tomorrow after the snapshots have changed.
CONFIRMATION_TTL = timedelta(minutes=15)


class ConfirmationKind(enum.Enum):
    RESTORE = "restore"
    PRUNE = "prune"
    DELETE = "delete"
    UNLOCK = "unlock"
    ARCHIVE = "archive"


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    """Restore ``vm`` to exactly the snapshot shown (``libvirt_name`` never changes, even if
    the snapshot is renamed meanwhile).

    ``backup_store``: the snapshot is a restore point in the backup store (written back to the
    disks, no memory state). ``as_name``: a copy defined as a new VM of that name. ``define``:
    the VM no longer exists and is defined again under its own name. The three are stored only
    when set, so a release-0.1 row reads as an internal restore in place."""

    vm: str
    label: str
    libvirt_name: str
    safety_snapshot: bool = True
    as_name: str | None = None
    backup_store: bool = False
    define: bool = False

    @property
    def creates_vm(self) -> bool:
        """Whether the restore defines a VM rather than changing one."""
        return self.as_name is not None or self.define

    @property
    def typed_name(self) -> str:
        """What the person types to confirm: the VM that will be changed or defined."""
        return self.as_name if self.as_name is not None else self.vm


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """Delete exactly the snapshot shown (or clear its record, when libvirt lost it)."""

    vm: str
    label: str
    libvirt_name: str


@dataclass(frozen=True, slots=True)
class ArchiveRequest:
    """Move exactly the internal snapshot shown into the backup store, then delete it (its
    memory state is not kept)."""

    vm: str
    label: str
    libvirt_name: str


@dataclass(frozen=True, slots=True)
class PruneRequest:
    """Delete what the preview listed (``pinned``: VM uuid -> libvirt names) and a fresh plan
    still deletes, by the policy the preview used. ``vm`` None: every VM."""

    vm: str | None
    keep: tuple[tuple[str, int], ...]
    pinned: tuple[tuple[str, tuple[str, ...]], ...]
    include_manual: bool = False
    safety_keep_last: int | None = None
    safety_keep_days: int | None = None


@dataclass(frozen=True, slots=True)
class UnlockRequest:
    """End the lock the preview showed, held by ``operation_id``."""

    vm: str
    operation_id: str


Request = RestoreRequest | DeleteRequest | PruneRequest | UnlockRequest | ArchiveRequest

_KINDS: dict[type[object], ConfirmationKind] = {
    RestoreRequest: ConfirmationKind.RESTORE,
    DeleteRequest: ConfirmationKind.DELETE,
    PruneRequest: ConfirmationKind.PRUNE,
    UnlockRequest: ConfirmationKind.UNLOCK,
    ArchiveRequest: ConfirmationKind.ARCHIVE,
}


def kind_of(request: Request) -> ConfirmationKind:
    return _KINDS[type(request)]


def request_to_json(request: Request) -> dict[str, object]:
    """How a request is stored (the JSON column of release 0.1, key for key)."""
    if isinstance(request, PruneRequest):
        return {
            "vm": request.vm,
            "keep": dict(request.keep),
            "include_manual": request.include_manual,
            "safety_keep_last": request.safety_keep_last,
            "safety_keep_days": request.safety_keep_days,
            "pinned": {uuid: list(names) for uuid, names in request.pinned},
        }
    if isinstance(request, UnlockRequest):
        return {"vm": request.vm, "operation_id": request.operation_id}
    data: dict[str, object] = {
        "vm": request.vm,
        "label": request.label,
        "libvirt_name": request.libvirt_name,
    }
    if isinstance(request, RestoreRequest):
        data["safety_snapshot"] = request.safety_snapshot
        # Keys added after release 0.1, written only when set (0.1 rows lack them).
        if request.as_name is not None:
            data["as_name"] = request.as_name
        if request.backup_store:
            data["backup_store"] = True
        if request.define:
            data["define"] = True
    return data


def request_from_json(kind: ConfirmationKind, data: Mapping[str, object]) -> Request:
    """The stored request; ``InvalidInput`` (run the command again) for one that cannot be
    read, so a damaged row is refused rather than half understood."""
    try:
        if kind is ConfirmationKind.PRUNE:
            keep, pinned, vm = data["keep"], data["pinned"], data.get("vm")
            if not isinstance(keep, Mapping) or not isinstance(pinned, Mapping):
                raise TypeError("keep and pinned are tables")
            return PruneRequest(
                None if vm is None else _str(vm),
                keep=tuple((str(k), _int(v)) for k, v in keep.items()),
                pinned=tuple((str(u), tuple(_strs(n))) for u, n in pinned.items()),
                include_manual=bool(data.get("include_manual", False)),
                safety_keep_last=_optional_int(data.get("safety_keep_last")),
                safety_keep_days=_optional_int(data.get("safety_keep_days")),
            )
        vm = _str(data["vm"])
        if kind is ConfirmationKind.UNLOCK:
            return UnlockRequest(vm, _str(data["operation_id"]))
        label, name = _str(data["label"]), _str(data["libvirt_name"])
        if kind is ConfirmationKind.DELETE:
            return DeleteRequest(vm, label, name)
        if kind is ConfirmationKind.ARCHIVE:
            return ArchiveRequest(vm, label, name)
        as_name = data.get("as_name")
        return RestoreRequest(
            vm,
            label,
            name,
            _bool(data.get("safety_snapshot", True)),
            as_name=None if as_name is None else _str(as_name),
            backup_store=_bool(data.get("backup_store", False)),
            define=_bool(data.get("define", False)),
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(
            f"this {kind.value} confirmation is damaged; run the command again"
        ) from None


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("a text field")
    return value


def _bool(value: object) -> bool:
    # bool("false") is True: a damaged row must not turn a safety snapshot off or on.
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _strs(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        raise TypeError("a list")
    return [_str(v) for v in value]


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("a whole number")
    return value


def _optional_int(value: object) -> int | None:
    return None if value is None else _int(value)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What will run on confirm. ``request`` holds the request's details (VM, snapshot, the
    exact list a prune preview showed) so confirm runs what was shown, not a fresh guess."""

    id: str
    kind: ConfirmationKind
    requested_by: str
    created_at: datetime
    expires_at: datetime
    request: Request
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
    request: Request,
    requested_by: str,
    now: datetime,
    *,
    team: str | None = None,
    channel: str | None = None,
) -> Confirmation:
    return Confirmation(
        id=secrets.token_hex(16),
        kind=kind_of(request),
        requested_by=requested_by,
        created_at=now,
        expires_at=now + CONFIRMATION_TTL,
        request=request,
        vm_name=request.vm,
        team=team,
        channel=channel,
    )
