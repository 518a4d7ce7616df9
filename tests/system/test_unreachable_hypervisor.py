"""A configured hypervisor that does not answer at start: snapbot waits for it, then
reconciles against it and no other (the review's first defect, on a real libvirtd)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from core.bootstrap import build_core
from core.catalogue.db import open_database
from core.catalogue.models import OperationRow
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.domain.operation import OperationKind, Stage
from core.errors import HypervisorUnavailable
from core.services.operations import OperationRunner
from tests.conftest import ALICE
from tests.reliability.figures import record
from tests.system import daemon

pytestmark = pytest.mark.system

# A process of this host that is no longer there: its lock is provably abandoned.
DEAD = f"{socket.gethostname()}:999999:dead"


async def test_snapbot_waits_for_the_configured_daemon_and_reconciles_only_then(
    tmp_path: Path,
) -> None:
    # The configured socket leads nowhere yet; later it leads to the test's own libvirtd,
    # as a daemon that comes up after snapbot would.
    link = tmp_path / "libvirt-sock"
    uri = f"qemu:///session?socket={link}"
    settings = Settings(
        libvirt_uri=uri,
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url=f"sqlite://{tmp_path / 'catalogue.db'}",
    )
    async with open_database(settings.database_url):
        catalogue = TortoiseCatalogue(SystemClock())
        runner = OperationRunner(catalogue, SystemClock(), DEAD)
        op = runner.new_operation(
            OperationKind.SNAPSHOT,
            ALICE,
            vm_uuid="0badc0de-0000-4000-8000-000000000001",
            vm_name="vanished",
        )
        await catalogue.begin_operation(op, DEAD)
        await catalogue.set_stage(op.id, Stage.CHECKING)
    async with build_core(settings) as core:
        with pytest.raises(HypervisorUnavailable, match="unreachable"):
            await core.snapshots.list_vms()
        await asyncio.sleep(1.5)  # a retry or two against nothing changes nothing
        assert (await OperationRow.get(id=op.id)).status == "running"
        link.symlink_to(daemon.SOCKET)
        await asyncio.wait_for(core.watch.ready.wait(), timeout=20)
        row = await OperationRow.get(id=op.id)
        assert row.status == "reconciled"
        assert "no longer exists" in (row.outcome or "")
        await core.snapshots.list_vms()  # requests are served now
        record(
            "Unreachable hypervisor at start",
            "configured libvirtd absent at start, appears later",
            f"requests refused as unreachable, no demo fallback, reconciled after "
            f"{core.watch.attempts} attempts",
        )
