"""What snapbot connects to at start: the configured hypervisor, or, on a first run with no
configuration at all, libvirt's demo hypervisor with a catalogue of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.bootstrap import build_core, demo_allowed
from core.catalogue.db import open_database
from core.catalogue.models import OperationRow, SnapshotRow
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import FALLBACK_LIBVIRT_URI, Secret, Settings, SlackSettings
from core.domain.operation import OperationKind, Stage
from core.errors import HypervisorUnavailable
from core.services.operations import OperationRunner
from tests.conftest import ALICE


def settings(tmp_path: Path, uri: str, *, explicit: bool, slack: bool = False) -> Settings:
    return Settings(
        libvirt_uri=uri,
        libvirt_uri_explicit=explicit,
        data_dir=tmp_path,
        database_url=f"sqlite://{tmp_path / 'catalogue.db'}",
        slack=SlackSettings(bot_token=Secret("xoxb-test"), signing_secret=Secret("s"))
        if slack
        else None,
    )


def unreachable(tmp_path: Path) -> str:
    return f"qemu:///session?socket={tmp_path / 'no-daemon' / 'libvirt-sock'}"


async def real_records(tmp_path: Path) -> str:
    """A catalogue with what a real hypervisor's snapbot leaves: a snapshot and an operation
    that was running when the process died."""
    async with open_database(f"sqlite://{tmp_path / 'catalogue.db'}"):
        catalogue = TortoiseCatalogue(SystemClock())
        await SnapshotRow.create(
            vm_uuid="11111111-1111-1111-1111-111111111111",
            vm_name="web-01",
            libvirt_name="sb-real",
            label="before-upgrade",
            description="",
            kind="full",
            captured_state="running",
            has_memory=True,
            created_at=await catalogue.database_now(),
            created_by="U_ALICE",
            origin="manual",
            status="present",
        )
        runner = OperationRunner(catalogue, SystemClock(), "gone-host:1:dead")
        op = runner.new_operation(
            OperationKind.RESTORE,
            ALICE,
            vm_uuid="11111111-1111-1111-1111-111111111111",
            vm_name="web-01",
        )
        await catalogue.begin_operation(op, "gone-host:1:dead")
        await catalogue.set_stage(op.id, Stage.REPLACING_DISK_AND_MEMORY)
        return op.id


async def test_the_demo_is_only_for_a_first_run_with_no_configuration(tmp_path: Path) -> None:
    assert demo_allowed(settings(tmp_path, "qemu:///system", explicit=False))
    assert not demo_allowed(settings(tmp_path, "qemu:///system", explicit=True))
    assert not demo_allowed(settings(tmp_path, "qemu:///system", explicit=False, slack=True))


async def test_a_configured_unreachable_hypervisor_is_never_replaced_by_the_demo(
    tmp_path: Path,
) -> None:
    """The old fallback switched to test:///default and reconciled the real catalogue against
    it: the interrupted restore was closed as "VM no longer exists", the real snapshot marked
    missing."""
    op_id = await real_records(tmp_path)
    uri = unreachable(tmp_path)
    async with build_core(settings(tmp_path, uri, explicit=True)) as core:
        assert core.fallback_reason is None
        assert core.libvirt_uri == uri
        with pytest.raises(HypervisorUnavailable, match="unreachable"):
            await core.snapshots.list_vms()
        with pytest.raises(HypervisorUnavailable, match="keeps trying"):
            await core.snapshots.create_snapshot("web-01", "x", actor=ALICE)
        assert (await OperationRow.get(id=op_id)).status == "running"
        assert (await SnapshotRow.get(libvirt_name="sb-real")).status == "present"


async def test_slack_mode_never_falls_back_either(tmp_path: Path) -> None:
    await real_records(tmp_path)
    uri = unreachable(tmp_path)
    async with build_core(settings(tmp_path, uri, explicit=False, slack=True)) as core:
        assert core.fallback_reason is None
        with pytest.raises(HypervisorUnavailable):
            await core.snapshots.list_vms()


async def test_the_first_run_demo_has_its_own_catalogue(tmp_path: Path) -> None:
    op_id = await real_records(tmp_path)
    async with build_core(settings(tmp_path, unreachable(tmp_path), explicit=False)) as core:
        assert core.libvirt_uri == FALLBACK_LIBVIRT_URI
        assert core.fallback_reason is not None
        assert "cannot reach libvirt" in core.fallback_reason
        assert [v.vm.name for v in await core.snapshots.list_vms()] == ["test"]
        [group] = await core.snapshots.list_snapshots()
        assert group.vm_name == "test"
        assert group.snapshots == ()  # the real records are not in the demo's catalogue
    async with open_database(f"sqlite://{tmp_path / 'catalogue.db'}"):
        assert (await OperationRow.get(id=op_id)).status == "running"
        assert (await SnapshotRow.get(libvirt_name="sb-real")).status == "present"
