"""``Catalogue`` on tortoise-orm (SQLite by default, PostgreSQL in production): one object for
the callers that want every store, made of the per-aggregate stores of this package."""

from __future__ import annotations

from core.catalogue.clock import SystemClock
from core.catalogue.confirmations import TortoiseConfirmations
from core.catalogue.drills import TortoiseDrills
from core.catalogue.leases import TortoiseLeases
from core.catalogue.operations import TortoiseOperations
from core.catalogue.schedules import TortoiseSchedules
from core.catalogue.snapshots import TortoiseSnapshots
from core.catalogue.usage import TortoiseUsage
from core.ports import Clock

__all__ = ["SystemClock", "TortoiseCatalogue"]


class TortoiseCatalogue(
    TortoiseSnapshots,
    TortoiseOperations,
    TortoiseConfirmations,
    TortoiseSchedules,
    TortoiseLeases,
    TortoiseDrills,
    TortoiseUsage,
):
    """Every catalogue port (``Catalogue``, holds, schedules and runs, leases, usage samples);
    needs an open database (``core.catalogue.db``). Each store is usable on its own too."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
