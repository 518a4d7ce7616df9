"""Every error snapbot's core raises, as one tree.

Front ends catch ``CoreError`` and render it (``bot.messages.error_text``); anything else is a
bug and is logged with a reference id. The errors carry structured fields, not prose, so the
wording lives in one place and the scheduler, Slack and the console say the same thing.

    CoreError
    ├── InvalidInput                 the request itself is wrong; nothing was touched
    │   ├── InvalidLabel             a snapshot name breaks the naming rules
    │   └── VmAmbiguous              a VM name on several hosts; names the candidates
    ├── NotFound
    │   ├── VmNotFound               carries the closest existing names
    │   ├── SnapshotNotFound         carries the closest existing labels
    │   ├── ScheduleNotFound         carries the existing schedules
    │   └── SnapshotMissing          catalogued, but gone from libvirt
    ├── Conflict                     the request is fine but the VM's state forbids it now
    │   ├── VmBusy                   another snapbot operation holds the VM
    │   ├── HypervisorBusy           libvirt's own job lock is held (code 68)
    │   ├── LabelTaken               (also by a record whose snapshot vanished from libvirt)
    │   ├── LibvirtJobRunning        an unlock while libvirt still works on the VM
    │   ├── HostBusy                 the host runs as many operations as it may; waited too long
    │   ├── SnapshotHeld             a held snapshot is not deleted; says who holds it
    │   └── ConfirmationSpent        a confirmation was already used, expired, or is someone else's
    ├── Forbidden                    the requester lacks a role; says which
    │   └── HoldForbidden            only the snapshot's creator or an admin may (un)hold it
    ├── Unsupported                  this host cannot do it for this VM; says the way out
    ├── InsufficientSpace            pre-flight free-space check failed
    ├── SpaceUnknown                 a place the snapshot writes to cannot be measured
    └── HypervisorError              libvirt failed
        ├── HypervisorUnavailable    connection lost or refused; outcome of a mutation unknown
        │   └── HypervisorTimeout    a call passed its deadline; its outcome is unknown
        └── OperationFailed          libvirt refused or failed the call; says the VM's state now
            └── RestoreFailed        a restore failed; also says what recovery did

libvirt's errors are mapped to this tree in exactly one place:
``core.adapters.libvirt.errors.map_libvirt_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


class CoreError(Exception):
    """Root of every error the core raises on purpose."""


class InvalidInput(CoreError):
    """The request is malformed; nothing was changed."""


class InvalidLabel(InvalidInput):
    """A snapshot label breaks a naming rule."""

    def __init__(self, label: str, rule: str) -> None:
        super().__init__(f"invalid snapshot name {label!r}: {rule}")
        self.label = label
        self.rule = rule


class VmAmbiguous(InvalidInput):
    """A VM name alone that several hosts have; ``candidates`` are the names that tell them
    apart (``hv1/web-01``), so the answer can say which to type."""

    def __init__(self, name: str, candidates: Sequence[str]) -> None:
        super().__init__(
            f"VM name {name!r} is on several hosts: {', '.join(candidates)}; name one of them"
        )
        self.name = name
        self.candidates = tuple(candidates)


class NotFound(CoreError):
    """Something named by the user does not exist."""


class VmNotFound(NotFound):
    """No VM of that name; ``suggestions`` are existing names, closest first."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(f"no VM named {name!r}")
        self.name = name
        self.suggestions = tuple(suggestions)


class SnapshotNotFound(NotFound):
    """No snapshot of that label on the VM; ``suggestions`` are its labels, closest first."""

    def __init__(
        self,
        vm: str,
        label: str,
        suggestions: Sequence[str] = (),
        *,
        deleted_by: str | None = None,
        deleted_at: datetime | None = None,
    ) -> None:
        super().__init__(f"VM {vm!r} has no snapshot {label!r}")
        self.vm = vm
        self.label = label
        self.suggestions = tuple(suggestions)
        # From the audit trail: who deleted a snapshot of that name, and when.
        self.deleted_by = deleted_by
        self.deleted_at = deleted_at


class ScheduleNotFound(NotFound):
    """No schedule with that id or name; ``existing`` lists them."""

    def __init__(self, key: str, existing: Sequence[str]) -> None:
        super().__init__(f"no schedule {key}")
        self.key = key
        self.existing = list(existing)


class SnapshotMissing(NotFound):
    """The catalogue knows the snapshot but libvirt no longer has it (deleted outside snapbot)."""

    def __init__(self, vm: str, label: str) -> None:
        super().__init__(f"snapshot {label!r} of VM {vm!r} is gone from libvirt")
        self.vm = vm
        self.label = label


class Conflict(CoreError):
    """The request is valid but cannot run in the current state."""


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a VM, for a "busy" answer."""

    operation_kind: str
    requested_by: str
    since: datetime


class VmBusy(Conflict):
    """Another operation holds the VM's lock."""

    def __init__(self, vm: str, holder: LockHolder) -> None:
        super().__init__(
            f"VM {vm!r} is busy: {holder.operation_kind} by {holder.requested_by} "
            f"since {holder.since.isoformat()}"
        )
        self.vm = vm
        self.holder = holder


class HypervisorBusy(Conflict):
    """libvirt could not take the domain's job lock (another libvirt client is working on it)."""

    def __init__(self, vm: str, detail: str) -> None:
        super().__init__(f"libvirt is busy with VM {vm!r}: {detail}")
        self.vm = vm
        self.detail = detail


class HostBusy(Conflict):
    """The VM's host already runs as many snapbot operations as it may (``max_operations``),
    and none ended within ``waited_seconds``."""

    def __init__(self, host: str, vm: str, limit: int, waited_seconds: float) -> None:
        super().__init__(
            f"host {host} is busy: {limit} operation(s) already running there (its limit), "
            f"none ended within {waited_seconds:.0f} s; try {vm} again later"
        )
        self.host = host
        self.vm = vm
        self.limit = limit
        self.waited_seconds = waited_seconds


class LabelTaken(Conflict):
    """The VM already has a snapshot with that label, or with ``existing``, a label that looks
    the same (look-alike letters of another script, fullwidth forms, case)."""

    def __init__(
        self, vm: str, label: str, existing: str | None = None, *, missing: bool = False
    ) -> None:
        super().__init__(f"VM {vm!r} already has a snapshot named {existing or label!r}")
        self.vm = vm
        self.label = label
        self.existing = existing or label
        # Only a record of a snapshot deleted outside snapbot: clearing it frees the label.
        self.missing = missing


class LibvirtJobRunning(Conflict):
    """libvirt still runs a job on the VM: unlocking now could let a second operation start
    while the first is still changing it."""

    def __init__(self, vm: str) -> None:
        super().__init__(f"libvirt is still running a job on VM {vm!r}")
        self.vm = vm


class SnapshotHeld(Conflict):
    """A held snapshot is never deleted. ``held_by`` placed the hold (None: not recorded);
    ``hold`` describes it (``held until verified``)."""

    def __init__(self, vm: str, label: str, hold: str, held_by: str | None) -> None:
        super().__init__(f"snapshot {label!r} of VM {vm!r} is {hold}")
        self.vm = vm
        self.label = label
        self.hold = hold
        self.held_by = held_by


class ConfirmationSpent(Conflict):
    """A confirmation (restore modal, Confirm button) cannot run its action: ``reason`` is
    ``used`` (already ran: double click, replay), ``expired`` or ``not_yours``."""

    # What a confirmation nobody has a record of is called (read as expired).
    UNKNOWN = "an unknown request"

    def __init__(self, action: str, reason: str, used_by: str | None = None) -> None:
        super().__init__(f"confirmation of {action} is {reason}")
        self.action = action
        self.reason = reason
        self.used_by = used_by

    @classmethod
    def unknown(cls) -> ConfirmationSpent:
        """A confirmation id that names no stored confirmation."""
        return cls(cls.UNKNOWN, "expired")


class Forbidden(CoreError):
    """The requester lacks ``role`` for ``action`` (on ``vm``, in ``channel``, when limited)."""

    def __init__(
        self, user: str, action: str, role: str, vm: str | None = None, channel: str | None = None
    ) -> None:
        super().__init__(f"{user} may not {action}: needs role {role}")
        self.user = user
        self.action = action
        self.role = role
        self.vm = vm
        self.channel = channel


class HoldForbidden(Forbidden):
    """Only the snapshot's creator or an admin of its VM may place or release a hold on it."""

    def __init__(
        self, user: str, verb: str, vm: str, label: str, creator: str, channel: str | None = None
    ) -> None:
        super().__init__(user, f"{verb} {label}", "admin", vm, channel)
        self.verb = verb
        self.label = label
        self.creator = creator


class Unsupported(CoreError):
    """This host cannot do the operation for this VM; ``way_out`` says what would work."""

    def __init__(self, vm: str, reason: str, way_out: str) -> None:
        super().__init__(f"cannot snapshot VM {vm!r}: {reason}")
        self.vm = vm
        self.reason = reason
        self.way_out = way_out


class InsufficientSpace(CoreError):
    """Not enough free space where the snapshot would be written."""

    def __init__(self, vm: str, path: str, needed: int, available: int) -> None:
        super().__init__(
            f"not enough space for VM {vm!r} in {path}: need {needed} bytes, {available} free"
        )
        self.vm = vm
        self.path = path
        self.needed = needed
        self.available = available


class SpaceUnknown(CoreError):
    """The free space of ``places`` (where, why) cannot be known: the user must choose to go
    ahead without the check, knowing that a full disk pauses the guest mid-snapshot."""

    def __init__(self, vm: str, places: Sequence[tuple[str, str]]) -> None:
        self.places = tuple(places)
        super().__init__(
            f"free space for VM {vm!r} cannot be known in {', '.join(p for p, _ in places)}"
        )
        self.vm = vm


class HypervisorError(CoreError):
    """libvirt failed; ``detail`` is libvirt's own message. ``vm_state`` is the VM's state after
    the failure when the service could read it (None: not known)."""

    def __init__(self, detail: str, *, vm: str | None = None, vm_state: str | None = None) -> None:
        super().__init__(detail if vm is None else f"{vm}: {detail}")
        self.detail = detail
        self.vm = vm
        self.vm_state = vm_state


class HypervisorUnavailable(HypervisorError):
    """The libvirt connection failed. For a mutating call the outcome is unknown."""


class HypervisorTimeout(HypervisorUnavailable):
    """A libvirt call did not answer within ``seconds``; what it did is unknown until
    reconciled (its thread may still be waiting on libvirt)."""

    def __init__(self, detail: str, *, vm: str | None = None, seconds: float) -> None:
        super().__init__(detail, vm=vm)
        self.seconds = seconds


class OperationFailed(HypervisorError):
    """libvirt refused or failed the call."""


class RestoreFailed(OperationFailed):
    """A restore failed. ``vm_state`` is the state the VM is in now, after recovery attempts."""

    def __init__(self, vm: str, detail: str, vm_state: str, recovery: str) -> None:
        super().__init__(detail, vm=vm, vm_state=vm_state)
        self.recovery = recovery
