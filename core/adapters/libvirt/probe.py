"""Which rights libvirt grants at a URI (``snapbot doctor``'s first check)."""

from __future__ import annotations

import libvirt

from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.errors import map_libvirt_errors
from core.errors import CoreError
from core.services.doctor import Rights


class LibvirtRightsProbe:
    """A read-write open is what snapbot needs; when it is refused, a read-only open tells a
    polkit or group problem (the socket answers, the rights are missing) from a dead daemon."""

    def __init__(self, connection: LibvirtConnection) -> None:
        self._connection = connection

    async def rights(self, uri: str) -> Rights:
        try:
            await self._connection.run(lambda c: c.getURI(), mutating=False)
            return Rights.READ_WRITE
        except CoreError as refused:
            try:
                await self._connection.run_blocking(lambda: _read_only(uri))
            except CoreError:
                raise refused from None
            return Rights.READ_ONLY


def _read_only(uri: str) -> None:
    with map_libvirt_errors():
        conn = libvirt.openReadOnly(uri)
        conn.close()
