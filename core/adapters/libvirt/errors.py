"""The one place that turns ``libvirtError`` into the core's error tree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from core.errors import (
    CoreError,
    HypervisorBusy,
    HypervisorError,
    HypervisorUnavailable,
    OperationFailed,
    SnapshotNotFound,
    Unsupported,
    VmNotFound,
)

_CONNECTION_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)
_TRANSPORT_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})
_UNSUPPORTED_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    }
)


def is_connection_error(exc: libvirt.libvirtError) -> bool:
    """True when the error means the connection is dead rather than the call refused.

    An internal error raised by the RPC or remote layer is a broken transport too (nova's rule).
    """
    code = exc.get_error_code()
    if code in _CONNECTION_CODES:
        return True
    # A system or internal error is the transport's only when the RPC or remote layer raised
    # it: the QEMU driver reports a QEMU that died mid-job as a system error too, while the
    # connection is fine (saying "lost contact" then would be untrue).
    return (
        code in (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_SYSTEM_ERROR)
        and exc.get_error_domain() in _TRANSPORT_DOMAINS
    )


def to_core_error(
    exc: libvirt.libvirtError, *, vm: str | None = None, snapshot: str | None = None
) -> CoreError:
    """Map one libvirt error to the most specific core error."""
    code = exc.get_error_code()
    detail = exc.get_error_message() or str(exc)
    if is_connection_error(exc):
        if code == libvirt.VIR_ERR_AUTH_FAILED:
            detail += " (check the credentials or polkit rules for this libvirt URI)"
        return HypervisorUnavailable(detail, vm=vm)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return VmNotFound(vm or "?")
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return SnapshotNotFound(vm or "?", snapshot or "?")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return HypervisorBusy(vm or "?", detail)
    if code in _UNSUPPORTED_CODES:
        return Unsupported(
            vm or "?", detail, "see the README's table of what each libvirt version supports"
        )
    return OperationFailed(detail, vm=vm)


@contextmanager
def map_libvirt_errors(*, vm: str | None = None, snapshot: str | None = None) -> Iterator[None]:
    """Re-raise any ``libvirtError`` inside the block as a core error, chained."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise to_core_error(exc, vm=vm, snapshot=snapshot) from exc


class DiskAccessNotLocal(HypervisorError):
    """Disks are read and written through NBD sockets and image files on the VM's host, so
    backups and their restores need snapbot running there (a local libvirt URI)."""

    def __init__(self, uri: str) -> None:
        super().__init__(
            f"backups need snapbot running on the VM's host: {uri} is a remote libvirt "
            "connection, and the disks are read and written through files and sockets there"
        )
        self.uri = uri


class DiskAccessFailed(OperationFailed):
    """qemu-nbd, qemu-img or an NBD request failed while reading or writing a VM's disks, or a
    disk cannot be read this way; ``detail`` says which and why."""
