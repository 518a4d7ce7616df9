"""The catalogue contract, run against every database snapbot supports and the in-memory catalogue.

SQLite runs everywhere. PostgreSQL (production's database) runs when
``SNAPBOT_TEST_POSTGRES_URL`` names a server whose role may create databases; ``make test``
starts one (tests/system/host/start-postgres.sh) and sets the variable. Each PostgreSQL test
gets a database of its own, created from scratch and dropped afterwards. The in-memory
catalogue (tests/fakes/catalogue.py) runs everywhere too: it passes the same tests, through the
same ports, or it is not a stand-in for the database.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from core.catalogue import operations as tortoise_operations
from core.catalogue.db import open_database
from core.catalogue.store import TortoiseCatalogue
from core.domain.confirmation import Confirmation, ConfirmationKind, RestoreRequest
from core.domain.operation import Operation, OperationKind, OperationStatus, Stage
from core.domain.retention import RetentionPolicy
from core.domain.schedule import Cadence, Schedule, When
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    Hold,
    HoldKind,
    Origin,
    Snapshot,
    SnapshotKind,
    backup_libvirt_name,
)
from core.errors import ConfirmationSpent, InvalidInput, VmBusy
from core.ports import HoldCatalogue, RunStore, ScheduleCatalogue, ScheduleStore
from tests.fakes.catalogue import MemoryCatalogue

POSTGRES_URL_VARIABLE = "SNAPBOT_TEST_POSTGRES_URL"
VM_A = "11111111-1111-1111-1111-111111111111"
VM_B = "22222222-2222-2222-2222-222222222222"
# Microseconds on purpose: a backend that truncates them breaks round-trip equality.
T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


class ManualClock:
    """A clock the test moves by hand, so stored times can be asserted exactly."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


async def _admin_connection(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        problem = exc
    # Fail, not skip: the variable says PostgreSQL is meant to be tested here.
    pytest.fail(
        f"{POSTGRES_URL_VARIABLE}={url} is set but the server cannot be used: {problem!r}. "
        "Start it with `bash tests/system/host/start-postgres.sh`.",
        pytrace=False,
    )


# `make test` starts PostgreSQL and sets the variable, so every backend always runs there. By
# hand: bash tests/system/host/start-postgres.sh, then
# SNAPBOT_TEST_POSTGRES_URL=postgres://snapbot@127.0.0.1:55432/snapbot.
DATABASES = ["sqlite", "postgres"] if os.environ.get(POSTGRES_URL_VARIABLE) else ["sqlite"]
BACKENDS = [*DATABASES, "memory"]


class AnyCatalogue(HoldCatalogue, ScheduleCatalogue, ScheduleStore, RunStore, Protocol):
    """Every catalogue port: what each backend under test implements."""


@asynccontextmanager
async def _database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of that kind, by URL; dropped afterwards where it is a server's."""
    if kind == "sqlite":
        yield f"sqlite://{tmp_path / 'catalogue.db'}"
        return
    url = os.environ[POSTGRES_URL_VARIABLE]
    name = f"snapbot_test_{secrets.token_hex(6)}"
    admin = await _admin_connection(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
        finally:
            # FORCE: a test that failed mid-way may leave a pooled connection behind.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=DATABASES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with _database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + timedelta(hours=1))


@pytest.fixture(params=BACKENDS)
async def catalogue(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[AnyCatalogue]:
    if request.param == "memory":
        yield MemoryCatalogue(clock)
        return
    async with _database(request.param, tmp_path) as url:
        # tortoise caches each table's INSERT/DELETE SQL process-wide, keyed by connection name
        # ("default") and table only, not by dialect: after a SQLite test a PostgreSQL test
        # would send SQLite's `?` placeholders, and the reverse. One process only ever opens one
        # backend in production; this suite alternates, so it starts and leaves the cache empty.
        EXECUTOR_CACHE.clear()
        try:
            async with open_database(url):
                yield TortoiseCatalogue(clock)
        finally:
            EXECUTOR_CACHE.clear()


def snapshot(
    label: str,
    created_at: datetime,
    *,
    vm_uuid: str = VM_A,
    libvirt_name: str | None = None,
    memory_bytes: int | None = 256 * 2**20,
) -> Snapshot:
    return Snapshot(
        vm_uuid=vm_uuid,
        vm_name="web-01" if vm_uuid == VM_A else "web-02",
        libvirt_name=libvirt_name or f"sb-{label}",
        label=label,
        description=f"before {label} — ünïcode",
        kind=SnapshotKind.FULL,
        captured_state=CapturedState.RUNNING,
        has_memory=True,
        created_at=created_at,
        created_by="U_ALICE",
        origin=Origin.MANUAL,
        status=CatalogueStatus.PRESENT,
        memory_bytes=memory_bytes,
    )


def operation(
    op_id: str,
    *,
    vm_uuid: str = VM_A,
    kind: OperationKind = OperationKind.SNAPSHOT,
    user: str = "U_ALICE",
    started_at: datetime = T0,
    status: OperationStatus = OperationStatus.RUNNING,
) -> Operation:
    return Operation(
        id=op_id,
        kind=kind,
        vm_uuid=vm_uuid,
        vm_name="web-01" if vm_uuid == VM_A else "web-02",
        requested_by=user,
        via="slack",
        status=status,
        started_at=started_at,
        snapshot_label="before-upgrade",
        details={"nested": {"list": [1, 2.5, "three", None, True]}, "size": 2**40},
        channel="C_OPS",
        team="T_ACME",
    )


def confirmation(
    conf_id: str, *, user: str = "U_ALICE", expires_at: datetime | None = None
) -> Confirmation:
    return Confirmation(
        id=conf_id,
        kind=ConfirmationKind.RESTORE,
        requested_by=user,
        created_at=T0,
        expires_at=expires_at or T0 + timedelta(days=1),
        request=RestoreRequest("web-01", "before-upgrade", "sb-a", safety_snapshot=False),
        vm_name="web-01",
        team="T_ACME",
        channel="C_OPS",
    )


# --- opening -----------------------------------------------------------------------------------


async def test_opens_the_url_spellings_people_use(database_url: str) -> None:
    parts = urlsplit(database_url)
    if parts.scheme == "postgres":
        spellings = [
            urlunsplit(parts._replace(scheme=s)) for s in ("postgresql", "postgresql+asyncpg")
        ]
    else:
        spellings = [f"sqlite://{parts.netloc}{parts.path}"]  # no query: pragmas get added
    for n, url in enumerate(spellings):
        EXECUTOR_CACHE.clear()
        try:
            async with open_database(url):
                catalogue = TortoiseCatalogue(ManualClock(T0))
                await catalogue.add_snapshot(snapshot(f"via-{n}", T0 + timedelta(seconds=n)))
                assert [s.label for s in await catalogue.snapshots()] == [
                    f"via-{i}" for i in range(n + 1)
                ]
                if parts.scheme == "sqlite":
                    async with in_transaction() as conn:
                        [row] = await conn.execute_query_dict("PRAGMA journal_mode")
                    assert row["journal_mode"] == "wal"
        finally:
            EXECUTOR_CACHE.clear()


# --- snapshots ---------------------------------------------------------------------------------


async def test_snapshots_round_trip_in_creation_order(catalogue: AnyCatalogue) -> None:
    later = snapshot("later", T0 + timedelta(minutes=5))
    earlier = snapshot("earlier", T0, memory_bytes=None)
    other_vm = snapshot("other", T0 + timedelta(minutes=1), vm_uuid=VM_B)
    for s in (later, earlier, other_vm):
        await catalogue.add_snapshot(s)

    assert await catalogue.snapshots() == [earlier, other_vm, later]
    assert await catalogue.snapshots(VM_A) == [earlier, later]
    assert await catalogue.snapshots(VM_B) == [other_vm]
    assert await catalogue.snapshots("no-such-vm") == []
    listed = (await catalogue.snapshots(VM_A))[0]
    assert listed.created_at.utcoffset() == timedelta(0)


async def test_snapshot_counts_are_the_present_records_of_each_vm(
    catalogue: AnyCatalogue,
) -> None:
    assert await catalogue.snapshot_counts() == {}
    for n in range(3):
        await catalogue.add_snapshot(snapshot(f"a-{n}", T0 + timedelta(minutes=n)))
    await catalogue.add_snapshot(snapshot("b-0", T0, vm_uuid=VM_B))
    await catalogue.set_snapshot_status(VM_A, "sb-a-1", CatalogueStatus.MISSING)
    await catalogue.set_snapshot_status(VM_B, "sb-b-0", CatalogueStatus.MISSING)
    # What /snapshot vms shows: the same as counting the records one by one.
    assert await catalogue.snapshot_counts() == {VM_A: 2}


async def test_snapshot_tallies_sum_each_vms_records_as_reading_them_one_by_one_would(
    catalogue: AnyCatalogue,
) -> None:
    assert await catalogue.snapshot_tallies() == {}
    for n in range(4):
        await catalogue.add_snapshot(snapshot(f"a-{n}", T0 + timedelta(minutes=n)))
    await catalogue.add_snapshot(snapshot("a-nomem", T0, memory_bytes=None))
    await catalogue.add_snapshot(snapshot("b-0", T0, vm_uuid=VM_B, memory_bytes=5))
    await catalogue.set_snapshot_status(VM_A, "sb-a-1", CatalogueStatus.MISSING)
    await catalogue.set_backup_damage(VM_A, "sb-a-2", "disk vda: chunk 3f2a… is corrupt")
    await catalogue.set_hold(VM_A, "sb-a-3", Hold(HoldKind.INDEFINITE))
    # archived: no memory state any more, so none counted
    await catalogue.archive_snapshot(VM_A, "sb-a-0", point_id="p0", logical_bytes=10, added_bytes=3)
    tallies = await catalogue.snapshot_tallies()
    assert set(tallies) == {VM_A, VM_B}
    a, b = tallies[VM_A], tallies[VM_B]
    assert (a.vm_name, a.present, a.missing, a.damaged, a.held) == ("web-01", 4, 1, 1, 1)
    assert a.full == 3  # a-0 is archived
    assert a.total == 5
    # a-2 and a-3 (a-1 is missing, a-0 archived, a-nomem has no size)
    assert a.memory_bytes == 2 * 256 * 2**20
    assert (b.vm_name, b.present, b.missing, b.memory_bytes) == ("web-02", 1, 0, 5)
    await catalogue.remove_snapshot(VM_B, "sb-b-0")
    assert set(await catalogue.snapshot_tallies()) == {VM_A}


async def test_newest_snapshots_are_each_asked_vms_latest_records_newest_first(
    catalogue: AnyCatalogue,
) -> None:
    assert await catalogue.newest_snapshots([VM_A], 10) == {}
    for n in range(12):
        await catalogue.add_snapshot(snapshot(f"a-{n:02}", T0 + timedelta(minutes=n)))
    # equal times: the later record counts as the newer
    await catalogue.add_snapshot(snapshot("a-tie", T0 + timedelta(minutes=11)))
    for n in range(3):
        await catalogue.add_snapshot(snapshot(f"b-{n}", T0 + timedelta(hours=n), vm_uuid=VM_B))
    newest = await catalogue.newest_snapshots([VM_A, VM_B], 4)
    assert [s.label for s in newest[VM_A]] == ["a-tie", "a-11", "a-10", "a-09"]
    assert [s.label for s in newest[VM_B]] == ["b-2", "b-1", "b-0"]
    assert newest[VM_A][0] == next(s for s in await catalogue.snapshots(VM_A) if s.label == "a-tie")
    # only the VMs asked for
    assert set(await catalogue.newest_snapshots([VM_B], 10)) == {VM_B}
    assert await catalogue.newest_snapshots([], 10) == {}
    await catalogue.remove_snapshot(VM_A, "sb-a-tie")
    assert [s.label for s in (await catalogue.newest_snapshots([VM_A], 1))[VM_A]] == ["a-11"]


async def test_snapshots_with_equal_times_keep_insertion_order(
    catalogue: AnyCatalogue,
) -> None:
    labels = ["c", "a", "b"]
    for label in labels:
        await catalogue.add_snapshot(snapshot(f"snap-{label}", T0))
    assert [s.label for s in await catalogue.snapshots()] == [f"snap-{x}" for x in labels]


async def test_relabel_changes_only_that_snapshot(catalogue: AnyCatalogue) -> None:
    await catalogue.add_snapshot(snapshot("first", T0))
    await catalogue.add_snapshot(snapshot("second", T0 + timedelta(seconds=1)))

    await catalogue.relabel_snapshot(VM_A, "sb-first", "renamed")

    by_name = {s.libvirt_name: s.label for s in await catalogue.snapshots()}
    assert by_name == {"sb-first": "renamed", "sb-second": "second"}


async def test_status_memory_and_removal(catalogue: AnyCatalogue) -> None:
    await catalogue.add_snapshot(snapshot("keep", T0))
    await catalogue.add_snapshot(snapshot("gone", T0 + timedelta(seconds=1)))

    await catalogue.set_snapshot_status(VM_A, "sb-keep", CatalogueStatus.MISSING)
    await catalogue.set_memory_bytes(VM_A, "sb-keep", 5 * 2**40)
    await catalogue.remove_snapshot(VM_A, "sb-gone")

    [kept] = await catalogue.snapshots()
    assert kept.libvirt_name == "sb-keep"
    assert kept.status is CatalogueStatus.MISSING
    assert kept.memory_bytes == 5 * 2**40  # beyond 32 bits: needs a BIGINT column
    await catalogue.set_memory_bytes(VM_A, "sb-keep", None)
    assert (await catalogue.snapshots())[0].memory_bytes is None


async def test_label_and_libvirt_name_are_unique_per_vm(catalogue: AnyCatalogue) -> None:
    # The store does not translate the violation: the service checks labels first and turns a
    # race it loses into LabelTaken; the constraint is the last line of defence.
    await catalogue.add_snapshot(snapshot("daily", T0))

    with pytest.raises(IntegrityError):
        await catalogue.add_snapshot(snapshot("daily", T0, libvirt_name="sb-other"))
    with pytest.raises(IntegrityError):
        await catalogue.add_snapshot(snapshot("weekly", T0, libvirt_name="sb-daily"))
    await catalogue.add_snapshot(snapshot("daily", T0, vm_uuid=VM_B))  # another VM may

    await catalogue.add_snapshot(snapshot("weekly", T0 + timedelta(seconds=1)))
    with pytest.raises(IntegrityError):
        await catalogue.relabel_snapshot(VM_A, "sb-weekly", "daily")
    labels = sorted((s.vm_uuid, s.label) for s in await catalogue.snapshots())
    assert labels == [(VM_A, "daily"), (VM_A, "weekly"), (VM_B, "daily")]


def restore_point(
    label: str,
    created_at: datetime,
    point_id: str,
    *,
    damage: str | None = None,
    consistency: str | None = "frozen",
) -> Snapshot:
    """A restore point in the backup store, as a backup records it."""
    return replace(
        snapshot(label, created_at, libvirt_name=backup_libvirt_name(point_id), memory_bytes=None),
        kind=SnapshotKind.INCREMENTAL,
        has_memory=False,
        origin=Origin.SCHEDULED,
        created_by="schedule:nightly",
        point_id=point_id,
        logical_bytes=3 * 2**40,  # beyond 32 bits: BIGINT columns
        added_bytes=5 * 2**32 + 1,
        damage=damage,
        consistency=consistency,
    )


async def test_restore_points_round_trip_with_their_backup_store_fields(
    catalogue: AnyCatalogue,
) -> None:
    internal = snapshot("internal", T0)
    point = restore_point("nightly-1", T0 + timedelta(seconds=1), "20260301T093016Z-1a2b3c4d")
    damaged = restore_point(
        "nightly-2",
        T0 + timedelta(seconds=2),
        "20260302T093016Z-0000ffff",
        damage="disk vda: 2 chunks missing — ünïcode " + "x" * 2000,  # longer than any VARCHAR
        consistency="crash-consistent",
    )
    for s in (internal, point, damaged):
        await catalogue.add_snapshot(s)

    assert await catalogue.snapshots(VM_A) == [internal, point, damaged]
    assert point.libvirt_name == "pt-20260301t093016z-1a2b3c4d"
    assert (internal.point_id, internal.logical_bytes, internal.consistency) == (None,) * 3


async def test_backup_damage_is_recorded_and_cleared_on_that_point_only(
    catalogue: AnyCatalogue,
) -> None:
    first = restore_point("nightly-1", T0, "20260301T093015Z-00000001")
    second = restore_point("nightly-2", T0 + timedelta(seconds=1), "20260301T093016Z-00000002")
    await catalogue.add_snapshot(first)
    await catalogue.add_snapshot(second)

    await catalogue.set_backup_damage(VM_A, first.libvirt_name, "disk vda: chunk 3f2a… is corrupt")
    assert [s.damage for s in await catalogue.snapshots()] == [
        "disk vda: chunk 3f2a… is corrupt",
        None,
    ]
    await catalogue.set_backup_damage(VM_A, first.libvirt_name, None)
    assert await catalogue.snapshots() == [first, second]


async def test_archiving_turns_a_full_snapshot_into_a_restore_point_keeping_its_record(
    catalogue: AnyCatalogue,
) -> None:
    full = replace(snapshot("before-upgrade", T0), origin=Origin.SAFETY, created_by="U_BOB")
    other = snapshot("other", T0 + timedelta(seconds=1))
    await catalogue.add_snapshot(full)
    await catalogue.add_snapshot(other)
    hold = Hold(HoldKind.UNTIL, T0 + timedelta(days=7), reminded_at=T0 + timedelta(hours=2))
    await catalogue.set_hold(VM_A, full.libvirt_name, hold)

    await catalogue.archive_snapshot(
        VM_A,
        full.libvirt_name,
        point_id="20260301T093015Z-abcdef01",
        logical_bytes=4 * 2**40,
        added_bytes=2**33,
    )

    archived = replace(
        full,
        kind=SnapshotKind.ARCHIVED,
        has_memory=False,
        memory_bytes=None,
        held=True,
        hold=hold,
        point_id="20260301T093015Z-abcdef01",
        logical_bytes=4 * 2**40,
        added_bytes=2**33,
    )
    assert await catalogue.snapshots() == [archived, other]
    assert archived.kind.in_backup_store

    # A retried archive does not point the record at another point (it would lose the first).
    await catalogue.archive_snapshot(
        VM_A,
        full.libvirt_name,
        point_id="20260301T093099Z-99999999",
        logical_bytes=1,
        added_bytes=1,
    )
    assert await catalogue.snapshots() == [archived, other]


async def test_status_label_and_removal_work_on_backup_store_records(
    catalogue: AnyCatalogue,
) -> None:
    point = restore_point("nightly-1", T0, "20260301T093015Z-00000001")
    await catalogue.add_snapshot(point)
    await catalogue.add_snapshot(snapshot("internal", T0 + timedelta(seconds=1)))

    await catalogue.set_snapshot_status(VM_A, point.libvirt_name, CatalogueStatus.MISSING)
    await catalogue.relabel_snapshot(VM_A, point.libvirt_name, "kept-forever")
    await catalogue.set_hold(VM_A, point.libvirt_name, Hold(HoldKind.INDEFINITE))
    [changed, _] = await catalogue.snapshots()
    assert changed == replace(
        point,
        status=CatalogueStatus.MISSING,
        label="kept-forever",
        held=True,
        hold=Hold(HoldKind.INDEFINITE),
    )

    await catalogue.remove_snapshot(VM_A, point.libvirt_name)
    assert [s.label for s in await catalogue.snapshots()] == ["internal"]


# --- operations and locks ----------------------------------------------------------------------


async def test_second_operation_on_a_vm_is_busy_with_the_holder(
    catalogue: AnyCatalogue,
) -> None:
    await catalogue.begin_operation(operation("op1", user="U_ALICE"), owner="host-1:42")

    with pytest.raises(VmBusy) as busy:
        await catalogue.begin_operation(
            operation(
                "op2", kind=OperationKind.RESTORE, user="U_BOB", started_at=T0 + timedelta(1)
            ),
            owner="host-2:7",
        )
    holder = busy.value.holder
    assert (holder.operation_kind, holder.requested_by, holder.since) == ("snapshot", "U_ALICE", T0)
    assert busy.value.vm == "web-01"
    assert [o.id for o in await catalogue.operations()] == ["op1"]  # the loser recorded nothing

    await catalogue.begin_operation(operation("op3", vm_uuid=VM_B), owner="host-1:42")
    assert {o.id for o in await catalogue.operations()} == {"op1", "op3"}


async def test_concurrent_begins_on_one_vm_have_exactly_one_winner(
    catalogue: AnyCatalogue,
) -> None:
    ops = [operation(f"op{i}", user=f"U_{i}") for i in range(10)]
    results = await asyncio.gather(
        *(catalogue.begin_operation(op, owner=f"worker-{op.id}") for op in ops),
        return_exceptions=True,
    )

    winners = [op for op, result in zip(ops, results, strict=True) if result is None]
    losers = [result for result in results if result is not None]
    assert len(winners) == 1, results
    assert all(isinstance(r, VmBusy) for r in losers), losers
    assert {r.holder.requested_by for r in losers if isinstance(r, VmBusy)} == {
        winners[0].requested_by
    }
    running = await catalogue.running_operations()
    assert [(r.operation.id, r.owner) for r in running] == [
        (winners[0].id, f"worker-{winners[0].id}")
    ]
    assert [o.id for o in await catalogue.operations()] == [winners[0].id]


async def test_finish_releases_the_lock_and_records_the_outcome(
    catalogue: AnyCatalogue, clock: ManualClock
) -> None:
    await catalogue.begin_operation(operation("op1"), owner="host-1:42")
    clock.current = T0 + timedelta(minutes=3, microseconds=7)

    finished = await catalogue.finish_operation(
        "op1", OperationStatus.FAILED, outcome="left shut off", error="disk full"
    )

    assert finished == replace(
        operation("op1"),
        status=OperationStatus.FAILED,
        finished_at=clock.current,
        outcome="left shut off",
        error="disk full",
    )
    assert finished.duration_seconds == pytest.approx(180.000007)
    assert await catalogue.running_operations() == []
    await catalogue.begin_operation(operation("op2", started_at=clock.current), owner="host-1:42")
    assert [r.operation.id for r in await catalogue.running_operations()] == ["op2"]


async def test_running_operations_report_owner_heartbeat_stage_and_details(
    catalogue: AnyCatalogue, clock: ManualClock
) -> None:
    started = clock.current
    await catalogue.begin_operation(operation("op-a", started_at=started), owner="host-1:42")
    await catalogue.begin_operation(operation("op-b", vm_uuid=VM_B), owner="host-2:7")
    await catalogue.finish_operation("op-b", OperationStatus.SUCCEEDED)

    clock.current = started + timedelta(seconds=30)
    await catalogue.heartbeat("op-a")
    await catalogue.set_stage("op-a", Stage.SAVING_MEMORY_AND_DISK)
    await catalogue.update_details("op-a", {"libvirt_name": "sb-x", "size": 3})

    [running] = await catalogue.running_operations()
    assert running.owner == "host-1:42"
    # The heartbeat is the database's time, not this host's (whose clock says March): replicas
    # with skewed clocks judge stale locks alike.
    db_now = await catalogue.database_now()
    assert abs((db_now - running.heartbeat_at).total_seconds()) < 5
    assert abs((clock.current - running.heartbeat_at).total_seconds()) > 3600
    op = running.operation
    assert (op.id, op.status, op.stage, op.libvirt_name) == (
        "op-a",
        OperationStatus.RUNNING,
        Stage.SAVING_MEMORY_AND_DISK,
        "sb-x",
    )
    assert op.details == {
        "nested": {"list": [1, 2.5, "three", None, True]},
        "size": 3,
        "libvirt_name": "sb-x",
    }


async def test_an_operations_progress_is_its_stage_and_whole_details_in_one_write(
    catalogue: AnyCatalogue,
) -> None:
    # The first stage is recorded with the operation (no write of its own).
    await catalogue.begin_operation(replace(operation("op-a"), stage=Stage.CHECKING), "host-1:42")
    [running] = await catalogue.running_operations()
    assert running.operation.stage is Stage.CHECKING

    # The details given are all of them: they replace the stored ones, nothing is merged.
    evidence = {"host": "h1", "libvirt_name": "sb-x", "pre_state": "running"}
    await catalogue.record_progress("op-a", stage=Stage.SAVING_MEMORY_AND_DISK, details=evidence)
    [running] = await catalogue.running_operations()
    op = running.operation
    assert (op.stage, op.details, op.libvirt_name) == (
        Stage.SAVING_MEMORY_AND_DISK,
        evidence,
        "sb-x",
    )
    await catalogue.record_progress("op-a", stage=Stage.VERIFYING)  # the details stay
    await catalogue.record_progress("op-a", details={**evidence, "revert_issued": True})
    [running] = await catalogue.running_operations()
    assert (running.operation.stage, running.operation.details) == (
        Stage.VERIFYING,
        {**evidence, "revert_issued": True},
    )

    # An ended record is not rewritten by a late write of the process it was taken from.
    ended = await catalogue.finish_operation("op-a", OperationStatus.RECONCILED, outcome="gone")
    await catalogue.record_progress("op-a", stage=Stage.STARTING, details={"late": True})
    assert await catalogue.operations() == [ended]


async def test_ending_an_operation_files_the_snapshot_it_made_in_the_same_transaction(
    catalogue: AnyCatalogue, clock: ManualClock
) -> None:
    await catalogue.begin_operation(operation("op1"), owner="host-1:42")
    made = snapshot("daily", T0)
    details = {"host": "h1", "libvirt_name": made.libvirt_name, "origin": "manual"}

    assert await catalogue.end_operation(
        "op1", OperationStatus.SUCCEEDED, outcome="created daily", details=details, made=made
    )

    assert await catalogue.snapshots(VM_A) == [made]
    assert await catalogue.operations() == [
        replace(
            operation("op1"),
            status=OperationStatus.SUCCEEDED,
            finished_at=clock.current,
            outcome="created daily",
            details=details,
            libvirt_name=made.libvirt_name,
        )
    ]
    assert await catalogue.running_operations() == []
    await catalogue.begin_operation(operation("op2"), owner="host-1:42")  # the lock is free
    assert [r.operation.id for r in await catalogue.running_operations()] == ["op2"]


async def test_an_operation_taken_over_is_not_ended_again_nor_its_snapshot_filed_twice(
    catalogue: AnyCatalogue,
) -> None:
    await catalogue.begin_operation(operation("op1"), owner="host-1:42")
    # Another process thought this one dead: it reconciled the operation and filed the snapshot.
    await catalogue.add_snapshot(snapshot("daily", T0))
    ended = await catalogue.finish_operation("op1", OperationStatus.RECONCILED, outcome="kept")

    late = snapshot("daily", T0, memory_bytes=1)
    assert not await catalogue.end_operation(
        "op1", OperationStatus.SUCCEEDED, outcome="created", details={"x": 1}, made=late
    )
    assert await catalogue.operations() == [ended]
    assert await catalogue.snapshots(VM_A) == [snapshot("daily", T0)]


async def test_an_operation_whose_snapshot_cannot_be_filed_is_left_running_and_locked(
    catalogue: AnyCatalogue,
) -> None:
    await catalogue.add_snapshot(snapshot("daily", T0))
    await catalogue.begin_operation(operation("op1"), owner="host-1:42")

    clash = snapshot("daily", T0 + timedelta(seconds=1), libvirt_name="sb-other")
    with pytest.raises(IntegrityError):
        await catalogue.end_operation("op1", OperationStatus.SUCCEEDED, made=clash)

    # all or nothing: still running, still holding the VM, and the record is not filed
    [running] = await catalogue.running_operations()
    assert (running.operation.id, running.operation.status) == ("op1", OperationStatus.RUNNING)
    with pytest.raises(VmBusy):
        await catalogue.begin_operation(operation("op2"), owner="host-1:42")
    assert [s.libvirt_name for s in await catalogue.snapshots(VM_A)] == ["sb-daily"]


async def test_rejected_requests_are_audited_without_taking_the_lock(
    catalogue: AnyCatalogue,
) -> None:
    rejected = replace(
        operation("op-r", user="U_BOB"),
        status=OperationStatus.REJECTED,
        finished_at=T0,
        error="U_BOB may not restore",
    )
    await catalogue.record_finished(rejected)

    assert await catalogue.operations() == [rejected]
    assert await catalogue.running_operations() == []
    await catalogue.begin_operation(operation("op1"), owner="host-1:42")  # VM still free


async def test_operations_audit_is_newest_first_and_keeps_channel_and_team(
    catalogue: AnyCatalogue,
) -> None:
    times = [T0 + timedelta(minutes=m) for m in (2, 0, 9, 5)]
    for n, started in enumerate(times):
        rejected = replace(
            operation(f"op{n}", vm_uuid=VM_A if n % 2 == 0 else VM_B, started_at=started),
            status=OperationStatus.REJECTED,
        )
        await catalogue.record_finished(rejected)

    audit = await catalogue.operations()
    assert [o.id for o in audit] == ["op2", "op3", "op0", "op1"]
    assert [o.started_at for o in audit] == sorted(times, reverse=True)
    assert {(o.channel, o.team, o.via) for o in audit} == {("C_OPS", "T_ACME", "slack")}
    assert [o.id for o in await catalogue.operations(VM_A)] == ["op2", "op0"]
    assert [o.id for o in await catalogue.operations(limit=2)] == ["op2", "op3"]


async def test_operations_accept_whatever_the_user_typed(catalogue: AnyCatalogue) -> None:
    typed_vm = "web-" + "x" * 296  # a paste gone wrong: no such VM, but the refusal is audited
    rejected = replace(
        operation("op-r"), vm_name=typed_vm, status=OperationStatus.REJECTED, finished_at=T0
    )
    await catalogue.record_finished(rejected)
    [audited] = await catalogue.operations()
    assert audited.id == "op-r"
    assert audited.vm_name.startswith(typed_vm[:64])
    assert audited.vm_name == typed_vm[:254] + "…"  # cut to what the audit trail keeps

    # restore and delete take the lock before looking the label up, so it is unvalidated here
    typed_label = "l" * 300
    await catalogue.begin_operation(
        replace(operation("op-l"), snapshot_label=typed_label), owner="host-1:42"
    )
    [running] = await catalogue.running_operations()
    assert (running.operation.snapshot_label or "").startswith(typed_label[:64])
    assert running.operation.snapshot_label == typed_label[:254] + "…"


# --- confirmations -----------------------------------------------------------------------------


async def test_confirmation_round_trips_and_is_claimed_once(
    catalogue: AnyCatalogue, clock: ManualClock
) -> None:
    pending = confirmation("c1")
    await catalogue.add_confirmation(pending)
    assert await catalogue.get_confirmation("c1") == pending
    assert await catalogue.get_confirmation("nope") is None

    claimed = await catalogue.claim_confirmation("c1", "U_ALICE")

    assert claimed == replace(pending, used_at=clock.current, used_by="U_ALICE")
    assert await catalogue.get_confirmation("c1") == claimed
    with pytest.raises(ConfirmationSpent) as again:
        await catalogue.claim_confirmation("c1", "U_ALICE")
    assert (again.value.reason, again.value.used_by, again.value.action) == (
        "used",
        "U_ALICE",
        "restore",
    )


async def test_concurrent_claims_succeed_exactly_once(catalogue: AnyCatalogue) -> None:
    await catalogue.add_confirmation(confirmation("c1"))

    results = await asyncio.gather(
        *(catalogue.claim_confirmation("c1", "U_ALICE") for _ in range(20)),
        return_exceptions=True,
    )

    wins = [r for r in results if isinstance(r, Confirmation)]
    spent = [r for r in results if isinstance(r, ConfirmationSpent)]
    assert len(wins) == 1, results
    assert len(spent) == 19, results
    assert {(s.reason, s.used_by) for s in spent} == {("used", "U_ALICE")}


async def test_someone_elses_confirmation_is_refused_and_stays_claimable(
    catalogue: AnyCatalogue,
) -> None:
    await catalogue.add_confirmation(confirmation("c1", user="U_ALICE"))

    with pytest.raises(ConfirmationSpent) as refused:
        await catalogue.claim_confirmation("c1", "U_BOB")

    assert (refused.value.reason, refused.value.used_by) == ("not_yours", "U_ALICE")
    unclaimed = await catalogue.get_confirmation("c1")
    assert unclaimed is not None
    assert unclaimed.used_at is None
    assert (await catalogue.claim_confirmation("c1", "U_ALICE")).used_by == "U_ALICE"


async def test_expired_and_unknown_confirmations_are_refused(
    catalogue: AnyCatalogue, clock: ManualClock
) -> None:
    await catalogue.add_confirmation(
        confirmation("old", expires_at=clock.current - timedelta(microseconds=1))
    )
    await catalogue.add_confirmation(confirmation("fresh", expires_at=clock.current))

    with pytest.raises(ConfirmationSpent) as expired:
        await catalogue.claim_confirmation("old", "U_ALICE")
    assert expired.value.reason == "expired"
    with pytest.raises(ConfirmationSpent) as unknown:
        await catalogue.claim_confirmation("never-issued", "U_ALICE")
    assert unknown.value.reason == "expired"
    # expiry is exclusive: at exactly expires_at it may still be claimed
    assert (await catalogue.claim_confirmation("fresh", "U_ALICE")).used_at == clock.current


# --- locks: syncs, takeovers, late finishes ----------------------------------------------------


async def test_sync_lock_excludes_other_syncs_and_is_refused_while_an_operation_runs(
    catalogue: AnyCatalogue,
) -> None:
    token = await catalogue.lock_for_sync(VM_A, "host-1:42")
    assert token is not None
    assert token.startswith(tortoise_operations.SYNC_LOCK_PREFIX)
    assert len(token) <= 32
    assert await catalogue.lock_for_sync(VM_A, "host-2:7") is None
    assert await catalogue.lock_for_sync(VM_B, "host-2:7") is not None  # another VM is free
    assert await catalogue.running_operations() == []  # a sync is not an operation
    await catalogue.unlock_sync(token)

    await catalogue.begin_operation(operation("op1"), owner="host-1:42")
    assert await catalogue.lock_for_sync(VM_A, "host-2:7") is None


async def test_an_operation_waits_for_a_sync_instead_of_being_refused(
    catalogue: AnyCatalogue,
) -> None:
    token = await catalogue.lock_for_sync(VM_A, "host-1:42")
    assert token is not None
    begin = asyncio.ensure_future(catalogue.begin_operation(operation("op1"), owner="host-2:7"))
    await asyncio.sleep(0.3)
    assert not begin.done()

    await catalogue.unlock_sync(token)
    await asyncio.wait_for(begin, timeout=5)

    [running] = await catalogue.running_operations()
    assert (running.operation.id, running.owner) == ("op1", "host-2:7")


async def test_an_operation_is_told_busy_when_a_sync_outlasts_the_wait(
    catalogue: AnyCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tortoise_operations, "SYNC_WAIT_SECONDS", 0.2)
    assert await catalogue.lock_for_sync(VM_A, "host-1:42") is not None

    with pytest.raises(VmBusy) as busy:
        await catalogue.begin_operation(operation("op1"), owner="host-2:7")

    assert (busy.value.holder.operation_kind, busy.value.holder.requested_by) == (
        "a catalogue sync",
        "host-1:42",
    )
    assert await catalogue.operations() == []


async def test_take_over_moves_the_lock_once(catalogue: AnyCatalogue) -> None:
    await catalogue.begin_operation(operation("op1"), owner="dead-host:1")

    assert await catalogue.take_over("op1", "dead-host:1", "host-2:7")
    # a second replica that saw the same dead owner loses
    assert not await catalogue.take_over("op1", "dead-host:1", "host-3:9")
    [running] = await catalogue.running_operations()
    assert running.owner == "host-2:7"
    db_now = await catalogue.database_now()
    assert abs((db_now - running.heartbeat_at).total_seconds()) < 5
    # a running record left without a lock row has nothing to claim: whoever reconciles it may
    assert await catalogue.take_over("op-without-lock", "", "host-3:9")


async def test_only_a_running_operation_is_finished(catalogue: AnyCatalogue) -> None:
    await catalogue.begin_operation(operation("op1"), owner="dead-host:1")
    settled = await catalogue.finish_operation(
        "op1", OperationStatus.FAILED, outcome="reconciled", error="process died"
    )
    await catalogue.begin_operation(operation("op2"), owner="host-2:7")

    # the process that looked dead comes back and finishes: the takeover's outcome stands,
    # and the lock the next operation holds is not released
    late = await catalogue.finish_operation("op1", OperationStatus.SUCCEEDED, outcome="done")

    assert late == settled
    assert (late.status, late.outcome, late.error) == (
        OperationStatus.FAILED,
        "reconciled",
        "process died",
    )
    with pytest.raises(VmBusy) as busy:
        await catalogue.begin_operation(operation("op3"), owner="host-2:7")
    assert busy.value.holder.requested_by == "U_ALICE"
    assert [r.operation.id for r in await catalogue.running_operations()] == ["op2"]


# --- hosts and holds ---------------------------------------------------------------------------


async def test_claim_host_moves_only_that_vms_records_that_say_otherwise(
    catalogue: AnyCatalogue,
) -> None:
    records = [
        replace(snapshot("unknown", T0), host_uuid=None, hypervisor_uri=None),
        replace(snapshot("moved", T0 + timedelta(seconds=1)), host_uuid="old", hypervisor_uri="a"),
        replace(snapshot("here", T0 + timedelta(seconds=2)), host_uuid="h1", hypervisor_uri="b"),
        replace(snapshot("other", T0, vm_uuid=VM_B), host_uuid=None, hypervisor_uri=None),
    ]
    for record in records:
        await catalogue.add_snapshot(record)

    await catalogue.claim_host(VM_A, "h1", "qemu:///system")

    hosts = {s.label: (s.host_uuid, s.hypervisor_uri) for s in await catalogue.snapshots()}
    assert hosts == {
        "unknown": ("h1", "qemu:///system"),
        "moved": ("h1", "qemu:///system"),
        "here": ("h1", "b"),  # already this host's: left as it was
        "other": (None, None),
    }


async def test_holds_are_placed_and_released(catalogue: AnyCatalogue) -> None:
    await catalogue.add_snapshot(snapshot("kept", T0))
    await catalogue.add_snapshot(snapshot("free", T0 + timedelta(seconds=1)))
    hold = Hold(HoldKind.UNTIL, T0 + timedelta(days=7), reminded_at=T0 + timedelta(hours=2))

    await catalogue.set_hold(VM_A, "sb-kept", hold)

    by_label = {s.label: s for s in await catalogue.snapshots()}
    assert (by_label["kept"].held, by_label["kept"].hold) == (True, hold)
    assert (by_label["free"].held, by_label["free"].hold) == (False, None)
    await catalogue.set_hold(VM_A, "sb-kept", Hold(HoldKind.VERIFIED))
    assert (await catalogue.snapshots())[0].hold == Hold(HoldKind.VERIFIED)
    await catalogue.set_hold(VM_A, "sb-kept", None)
    assert [(s.held, s.hold) for s in await catalogue.snapshots()] == [(False, None)] * 2


# --- schedules, runs and the lease ------------------------------------------------------------


def schedule(name: str, *, policy: RetentionPolicy | None = None) -> Schedule:
    return Schedule(
        id=0,
        name=name,
        vms="web-*",
        when=When(Cadence.CRON, "*/15", "1-5", "*", "*", "mon-fri", "Europe/Paris"),
        policy=policy,
        channel="C_OPS",
        owner="U_ALICE",
        created_at=T0,
        grace=timedelta(minutes=20),
    )


async def test_schedules_round_trip_with_ids_and_unique_names(catalogue: AnyCatalogue) -> None:
    policy = RetentionPolicy(keep_last=3, keep_daily=7, include_manual=True, safety_keep_days=2)
    nightly = await catalogue.add_schedule(schedule("nightly", policy=policy))
    hourly = await catalogue.add_schedule(schedule("hourly"))

    assert nightly == replace(schedule("nightly", policy=policy), id=nightly.id)
    assert hourly.id != nightly.id
    assert await catalogue.schedules() == sorted([nightly, hourly], key=lambda s: s.id)
    with pytest.raises(InvalidInput, match="'nightly' exists already; choose another name"):
        await catalogue.add_schedule(schedule("nightly"))

    assert await catalogue.remove_schedule(nightly.id)
    assert not await catalogue.remove_schedule(nightly.id)
    assert await catalogue.schedules() == [hourly]


async def test_last_fire_only_moves_forwards(catalogue: AnyCatalogue) -> None:
    stored = await catalogue.add_schedule(schedule("nightly"))
    later, earlier = T0 + timedelta(days=2), T0 + timedelta(days=1)

    await catalogue.set_last_fire(stored.id, later)
    await catalogue.set_last_fire(stored.id, earlier)  # a slower process, late

    [found] = await catalogue.schedules()
    assert found.last_fire == later


async def test_a_slot_runs_once_and_dead_leaders_runs_are_interrupted(
    catalogue: AnyCatalogue, clock: ManualClock
) -> None:
    slot, next_slot = T0, T0 + timedelta(hours=1)
    first = await catalogue.begin_run(1, slot, "host-1:42")
    assert first is not None
    assert await catalogue.begin_run(1, slot, "host-2:7") is None  # the other replica loses
    other = await catalogue.begin_run(2, slot, "dead-host:1")
    assert other is not None
    assert await catalogue.running_run(1) == slot

    await catalogue.finish_run(first, "succeeded", {"vms": {"web-01": {"label": "x"}}})
    assert await catalogue.running_run(1) is None
    assert await catalogue.begin_run(1, next_slot, "host-1:42") is not None

    # host-1 leads now: runs other owners left running are over; its own is merely slow
    assert await catalogue.interrupt_runs("host-1:42") == 1
    assert await catalogue.runs() == [
        (1, slot, "succeeded"),
        (2, slot, "interrupted"),
        (1, next_slot, "running"),
    ]
    assert await catalogue.runs(2) == [(2, slot, "interrupted")]
    assert await catalogue.interrupt_runs("host-1:42") == 0


async def test_lease_has_one_holder_and_a_growing_fencing_token(catalogue: AnyCatalogue) -> None:
    ttl = timedelta(seconds=30)
    assert await catalogue.acquire_lease("scheduler", "host-1:42", ttl) == 1
    assert await catalogue.acquire_lease("scheduler", "host-1:42", ttl) == 1  # renewal
    assert await catalogue.acquire_lease("scheduler", "host-2:7", ttl) is None
    assert await catalogue.acquire_lease("other-lease", "host-2:7", ttl) == 1

    # host-1's renewal lapses at once (judged by the database's clock)...
    assert await catalogue.acquire_lease("scheduler", "host-1:42", -ttl) == 1
    # ...so even host-1 starts a new term: another may have led meanwhile, the token says so
    assert await catalogue.acquire_lease("scheduler", "host-1:42", -ttl) == 2
    assert await catalogue.acquire_lease("scheduler", "host-2:7", ttl) == 3
    assert await catalogue.acquire_lease("scheduler", "host-1:42", ttl) is None

    await catalogue.release_lease("scheduler", "host-1:42")  # not its lease: nothing happens
    assert await catalogue.acquire_lease("scheduler", "host-1:42", ttl) is None
    await catalogue.release_lease("scheduler", "host-2:7")
    assert await catalogue.acquire_lease("scheduler", "host-1:42", ttl) == 1


async def test_concurrent_lease_campaigns_have_one_winner(catalogue: AnyCatalogue) -> None:
    results = await asyncio.gather(
        *(
            catalogue.acquire_lease("scheduler", f"host-{n}", timedelta(seconds=30))
            for n in range(8)
        )
    )
    assert sorted(results, key=lambda r: r is None) == [1] + [None] * 7


async def test_an_operation_id_used_twice_is_an_error_not_a_wait(
    catalogue: AnyCatalogue,
) -> None:
    first = operation("op-twice")
    await catalogue.begin_operation(first, owner="host-1:1")
    await catalogue.finish_operation("op-twice", OperationStatus.SUCCEEDED)
    with pytest.raises(Exception):  # noqa: B017, PT011 - each backend raises its own clash
        await asyncio.wait_for(catalogue.begin_operation(first, owner="host-1:1"), 5)
