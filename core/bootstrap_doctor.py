"""The composition root of ``snapbot doctor``: real probes of libvirt, the catalogue database and
Slack, wired to ``core.services.doctor.Doctor``. Only ``bot.cli`` and tests import it."""

from __future__ import annotations

from collections.abc import Mapping

from core.adapters.backupstore.probe import DirectoryStoreProbe
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.adapters.libvirt.probe import LibvirtRightsProbe
from core.adapters.offsite.probe import BucketProbe
from core.adapters.slack_probe import SlackTokenProbe
from core.catalogue.schema_probe import CatalogueSchemaProbe
from core.catalogue.store import SystemClock
from core.config import Settings
from core.services.doctor import Doctor, DoctorPorts, Finding, Rights

# The bot scopes manifest.yml asks for (tests/unit/test_doctor.py holds the two equal): the
# installed package has no manifest to read.
BOT_SCOPES = frozenset(
    {"commands", "chat:write", "chat:write.public", "usergroups:read", "im:write", "files:write"}
)


async def run_doctor(settings: Settings, *, public_url: str | None = None) -> list[Finding]:
    """Every check against the real libvirt, database and Slack ``settings`` name."""
    # A host that does not answer is reported after this long, not libvirt's usual 120 s.
    connection = LibvirtConnection(settings.libvirt_uri, workers=2, read_deadline=30.0)
    hypervisor = LibvirtHypervisor(connection)
    api_url = settings.slack.api_url if settings.slack is not None else None
    # Each configured host is asked on its own connection.
    probes = {settings.libvirt_uri: LibvirtRightsProbe(connection)}
    extra = [
        LibvirtConnection(host.uri, workers=1, read_deadline=30.0)
        for host in settings.host_configs()
        if host.uri not in probes
    ]
    probes.update({c.uri: LibvirtRightsProbe(c) for c in extra})
    # Several hosts: disks and free space are read on each host through its own connection.
    connections = {connection.uri: connection, **{c.uri: c for c in extra}}
    per_host = {
        host.name: LibvirtHypervisor(connections[host.uri], name=host.name)
        for host in settings.host_configs()
    }
    ports = DoctorPorts(
        libvirt=_PerHost(probes),
        schema=CatalogueSchemaProbe(),
        slack=SlackTokenProbe(api_url),
        clock=SystemClock(),
        backup=DirectoryStoreProbe(),
        offsite=BucketProbe(),
    )
    try:
        doctor = Doctor(
            settings,
            hypervisor,
            ports,
            required_scopes=BOT_SCOPES,
            public_url=public_url,
            hosts=per_host if len(per_host) > 1 else None,
        )
        return await doctor.run()
    finally:
        await hypervisor.close()
        for other in extra:
            await other.close()


class _PerHost:
    """The rights probe of each configured host's own connection."""

    def __init__(self, probes: Mapping[str, LibvirtRightsProbe]) -> None:
        self._probes = probes

    async def rights(self, uri: str) -> Rights:
        return await self._probes[uri].rights(uri)
