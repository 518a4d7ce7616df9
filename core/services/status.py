"""What an operator's dashboard reads at any moment: how old each VM's newest snapshot is, which
VMs are locked and since when, whether each hypervisor host answers. Read from the catalogue
only (two queries), never from libvirt, so a metrics scrape costs nothing on the hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.domain.snapshot import CatalogueStatus
from core.ports import Catalogue, Clock
from core.services.availability import HypervisorWatch
from core.services.fleet import FleetWatch


@dataclass(frozen=True, slots=True)
class HeldLock:
    vm_name: str
    kind: str
    seconds: float


@dataclass(frozen=True, slots=True)
class HostReading:
    uri: str
    reachable: bool
    last_error: str | None
    attempts: int
    # the configured host's name (``[[hosts]]``, or the one ``LIBVIRT_URI`` implies)
    name: str = ""
    # the host this name reaches too (same host UUID): it is not a host of its own
    alias_of: str | None = None


@dataclass(frozen=True, slots=True)
class Readings:
    # VM name -> seconds since its newest snapshot still present was taken
    newest_snapshot_age: dict[str, float]
    locks: tuple[HeldLock, ...]
    hosts: tuple[HostReading, ...]


class StatusService:
    """Reads the current state for metrics."""

    def __init__(
        self, catalogue: Catalogue, watch: HypervisorWatch | FleetWatch, clock: Clock
    ) -> None:
        self._catalogue = catalogue
        self._watch = watch
        self._clock = clock

    async def readings(self) -> Readings:
        now = self._clock.now()
        newest: dict[str, float] = {}
        for snap in await self._catalogue.snapshots():
            if snap.status is not CatalogueStatus.PRESENT:
                continue
            age = max(0.0, (now - snap.created_at).total_seconds())
            newest[snap.vm_name] = min(age, newest.get(snap.vm_name, age))
        locks = tuple(
            HeldLock(
                running.operation.vm_name,
                running.operation.kind.value,
                max(0.0, (now - running.operation.started_at).total_seconds()),
            )
            for running in await self._catalogue.running_operations()
        )
        hosts = tuple(
            HostReading(
                uri=h.uri,
                reachable=h.reachable,
                last_error=h.last_error,
                attempts=h.attempts,
                name=h.name,
                alias_of=h.alias_of,
            )
            for h in self._watch.health()
        )
        return Readings(newest, locks, hosts)
