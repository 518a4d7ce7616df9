"""What a front end shows before a restore from the backup store, as plain values (the wording
is in ``bot.messages``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.domain.snapshot import Snapshot
from core.domain.vm import Vm


@dataclass(frozen=True, slots=True)
class StoreRestorePreview:
    """A restore from the backup store: in place (``vm`` exists, no ``as_name``), as a copy
    named ``as_name``, or of a VM that no longer exists (``vm`` None), defined again."""

    vm_name: str
    vm: Vm | None
    snapshot: Snapshot
    newer: tuple[Snapshot, ...] = ()
    as_name: str | None = None

    @property
    def creates_vm(self) -> bool:
        return self.as_name is not None or self.vm is None

    @property
    def typed_name(self) -> str:
        """What the person types to confirm: the VM that is changed or defined."""
        return self.as_name if self.as_name is not None else self.vm_name
