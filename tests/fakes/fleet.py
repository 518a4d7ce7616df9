"""Two fake hypervisor hosts behind one snapbot, for tests of what operators see of several
hosts (listings, reports, access, schedules). ``hv1`` has web-01 and db-01, ``hv2`` web-01 and
app-01: web-01 is a name both hosts have."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.access import AccessPolicy
from core.domain.hosts import HostConfig
from core.domain.vm import Vm, VmState
from core.ports import BackupStore
from core.services.fleet import FleetWatch
from tests.fakes.disks import FakeDiskAccess
from tests.fakes.hypervisor import FakeHypervisor

HV1_UUID = "aaaaaaaa-0000-4000-8000-000000000001"
HV2_UUID = "bbbbbbbb-0000-4000-8000-000000000002"
WEB_ON_1 = Vm("11111111-1111-1111-1111-111111111111", "web-01", VmState.RUNNING, 256 * 2**20)
DB_ON_1 = Vm("33333333-3333-3333-3333-333333333333", "db-01", VmState.SHUT_OFF, 512 * 2**20)
WEB_ON_2 = Vm("44444444-4444-4444-4444-444444444444", "web-01", VmState.RUNNING, 256 * 2**20)
APP_ON_2 = Vm("55555555-5555-5555-5555-555555555555", "app-01", VmState.SHUT_OFF, 256 * 2**20)


class TwoHosts:
    """The two fake hosts and the core over them."""

    def __init__(
        self,
        tmp_path: Path,
        catalogue: TortoiseCatalogue,
        *,
        access: AccessPolicy | None = None,
        limits: tuple[int, int] = (2, 2),
        store: BackupStore | None = None,
    ) -> None:
        self.hv1 = FakeHypervisor(
            WEB_ON_1, DB_ON_1, host_uuid=HV1_UUID, uri="qemu+ssh://root@hv1/system", name="hv1"
        )
        self.hv2 = FakeHypervisor(
            WEB_ON_2, APP_ON_2, host_uuid=HV2_UUID, uri="qemu+tls://hv2/system", name="hv2"
        )
        hosts = [
            (HostConfig("hv1", self.hv1.uri, limits[0]), self.hv1),
            (HostConfig("hv2", self.hv2.uri, limits[1]), self.hv2),
        ]
        settings = Settings(
            libvirt_uri=self.hv1.uri,
            libvirt_uri_explicit=True,
            data_dir=tmp_path,
            database_url=f"sqlite://{tmp_path / 'catalogue.db'}",
            hosts=tuple(config for config, _ in hosts),
        )
        if access is not None:
            settings = replace(settings, access=access)
        self.catalogue = catalogue
        # With a backup store: each host's VMs' disks as files of their own directory.
        disks = (
            None
            if store is None
            else {
                "hv1": FakeDiskAccess(self.hv1, tmp_path / "disks-hv1"),
                "hv2": FakeDiskAccess(self.hv2, tmp_path / "disks-hv2"),
            }
        )
        self.core: Core = wire(
            settings,
            hosts,
            catalogue,
            SystemClock(),
            libvirt_uri=", ".join(c.uri for c, _ in hosts),
            backoff=(0.05,),
            store=store,
            per_host_disks=disks,
        )

    @property
    def watch(self) -> FleetWatch:
        assert isinstance(self.core.watch, FleetWatch)
        return self.core.watch

    async def connect(self) -> bool:
        return await self.watch.connect_once()
