"""The wording and stored requests of the backup store's front end: consistency, the restore
warnings, verify reports, every progress stage, and confirmation rows that stay readable by
and from release 0.1."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot import messages
from bot.messages.backups import restore_store_warning, verify_report
from bot.previews import StoreRestorePreview
from core.domain.backups import Consistency, PointRef, VerifyReport
from core.domain.confirmation import (
    ArchiveRequest,
    ConfirmationKind,
    Request,
    RestoreRequest,
    kind_of,
    request_from_json,
    request_to_json,
)
from core.domain.operation import Stage
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    Origin,
    Snapshot,
    SnapshotKind,
)
from core.domain.vm import Vm, VmState
from core.errors import InvalidInput
from core.services.backups import VerifyResult

UUID = "11111111-1111-1111-1111-111111111111"
REF = PointRef(UUID, "20261126T020000Z-1a2b3c4d")


def point(label: str = "nightly", **changes: object) -> Snapshot:
    snap = Snapshot(
        vm_uuid=UUID,
        vm_name="web-01",
        libvirt_name="pt-20261126t020000z-1a2b3c4d",
        label=label,
        description="",
        kind=SnapshotKind.INCREMENTAL,
        captured_state=CapturedState.RUNNING,
        has_memory=False,
        created_at=datetime(2026, 11, 26, 2, 0, tzinfo=UTC),
        created_by="U_OPS",
        origin=Origin.SCHEDULED,
        status=CatalogueStatus.PRESENT,
        memory_bytes=None,
        point_id=REF.point_id,
        logical_bytes=20 * 2**30,
        added_bytes=120 * 2**20,
        consistency="crash-consistent",
    )
    return replace(snap, **changes)  # type: ignore[arg-type]


def test_new_restore_keys_round_trip_and_a_plain_restore_keeps_the_release_0_1_form() -> None:
    requests: list[Request] = [
        RestoreRequest("web-01", "a", "pt-1", True, as_name="web-01-copy", backup_store=True),
        RestoreRequest("gone", "a", "pt-2", False, backup_store=True, define=True),
        ArchiveRequest("web-01", "old", "sb-3"),
    ]
    for request in requests:
        assert request_from_json(kind_of(request), request_to_json(request)) == request
    # A restore of an internal snapshot is stored exactly as release 0.1 stored it.
    assert set(request_to_json(RestoreRequest("web-01", "a", "sb-9"))) == {
        "vm",
        "label",
        "libvirt_name",
        "safety_snapshot",
    }
    assert kind_of(ArchiveRequest("v", "l", "n")) is ConfirmationKind.ARCHIVE


def test_a_damaged_flag_is_refused_rather_than_read_as_true() -> None:
    row = {"vm": "web-01", "label": "a", "libvirt_name": "pt-1", "backup_store": "no"}
    with pytest.raises(InvalidInput, match="damaged"):
        request_from_json(ConfirmationKind.RESTORE, row)


def test_the_typed_name_of_a_copy_is_the_new_vm() -> None:
    assert RestoreRequest("web-01", "a", "pt-1", as_name="copy").typed_name == "copy"
    assert RestoreRequest("web-01", "a", "pt-1", define=True).typed_name == "web-01"
    assert RestoreRequest("web-01", "a", "pt-1", define=True).creates_vm


def test_consistency_is_said_with_its_reason() -> None:
    crash = messages.consistency_text(Consistency.CRASH_CONSISTENT, "no guest agent answered")
    assert crash.startswith("crash-consistent: no guest agent answered")
    assert "power cut" in crash
    assert "froze" in messages.consistency_text(Consistency.FROZEN)
    assert "shut off" in messages.consistency_text("shut off")


def test_every_stage_has_a_progress_line() -> None:
    for stage in Stage:
        assert messages.stage_text(stage)
    assert "backup store" in messages.stage_text(Stage.READING_DISKS)


def test_the_warnings_say_what_each_restore_does() -> None:
    vm = Vm(UUID, "web-01", VmState.RUNNING, 2**30)
    in_place = restore_store_warning(StoreRestorePreview("web-01", vm, point()))
    assert "Current data will be lost" in in_place
    assert "no memory state" in in_place
    assert "The VM's internal snapshots are kept." in in_place
    copy = restore_store_warning(StoreRestorePreview("web-01", vm, point(), as_name="web-02b"))
    assert "new UUID, new MAC addresses" in copy
    assert "left shut off" in copy
    assert "static IP address" in copy
    assert "Current data will be lost" not in copy
    gone = restore_store_warning(StoreRestorePreview("web-01", None, point()))
    assert "web-01 no longer exists. This will define it again" in gone
    damaged = restore_store_warning(StoreRestorePreview("web-01", vm, point(damage="2 pieces")))
    assert "Marked damaged by the last verification: 2 pieces" in damaged


def test_verify_names_the_damage_what_it_affects_and_what_heals_it() -> None:
    report = VerifyReport(
        points_checked=(REF,),
        chunks_checked=12,
        bytes_checked=48 * 2**20,
        damaged_chunks=("ab" * 32,),
        missing_chunks=(),
        damaged_points=(REF,),
    )
    text = verify_report(VerifyResult(report, (point(damage="1 piece"),), (), 1.5))
    assert "Verified 1 restore point(s) in 1.5 s: 12 stored piece(s), 48.0 MiB" in text
    assert "⚠️ 1 piece(s) damaged or missing." in text
    assert "web-01 `nightly`" in text
    assert "stores a damaged piece again where the VM's disks still hold that data" in text
    whole = VerifyReport((REF,), 12, 48 * 2**20, (), (), ())
    assert "Everything is intact" in verify_report(VerifyResult(whole, (), (), 0.2))
    nothing = VerifyReport((), 0, 0, (), (), ())
    assert "Nothing to verify" in verify_report(VerifyResult(nothing, (), (), 0.0))


def test_a_listing_line_shows_type_sizes_and_damage() -> None:
    from core.services.snapshots import VmSnapshots

    vm = Vm(UUID, "web-01", VmState.RUNNING, 2**30)
    table = messages.snapshots_table(
        [VmSnapshots("web-01", vm, (point(damage="1 piece"),), 10 * 2**30, None)]
    )
    assert "incremental disk" in table
    assert "logical 20.0 GiB · added 120.0 MiB" in table
    assert "DAMAGED: 1 piece" in table
    assert "1 damaged (see /snapshot verify)" in table
    assert "internal snapshots share unchanged blocks" not in table, "no internal ones here"


def test_damage_met_during_a_restore_says_what_to_do() -> None:
    from core.domain.backups import BackupDamaged

    text = messages.error_text(BackupDamaged("chunk abcd", "checksum mismatch"))
    assert "damaged in the backup store (chunk abcd: checksum mismatch)" in text
    assert "/snapshot verify" in text
