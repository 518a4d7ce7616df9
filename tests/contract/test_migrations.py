"""Upgrading a catalogue: release 0.1's database, and one at migration 0002, keep every row and
gain the new columns.

Each test starts from what a user has on disk: a database built from the exact tables release
0.1 created (tests/contract/data/release_0_1_schema.*.sql) and filled with rows in the form
that release wrote them. On SQLite always, on PostgreSQL when ``SNAPBOT_TEST_POSTGRES_URL`` is
set (``make test`` sets it), each PostgreSQL test in a database of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget
from tortoise.migrations.recorder import MigrationRecorder
from tortoise.models import Model

from core.catalogue import models
from core.catalogue.clock import SystemClock
from core.catalogue.db import APP, TORTOISE_ORM, CatalogueIncompatible, open_database
from core.catalogue.store import TortoiseCatalogue
from core.domain.schedule import ScheduleTask
from tests.contract import test_catalogue_backends as backends
from tests.reliability.figures import record

# The contract suite's fixture: an empty database per test, SQLite and (when set) PostgreSQL.
database_url = backends.database_url

DATA = Path(__file__).parent / "data"
T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
VM_A = "11111111-1111-1111-1111-111111111111"
VM_B = "22222222-2222-2222-2222-222222222222"
MODELS: list[type[Model]] = [
    models.SnapshotRow,
    models.OperationRow,
    models.VmLockRow,
    models.ConfirmationRow,
    models.ScheduleRow,
    models.ScheduleRunRow,
    models.LeaseRow,
]
PRIMARY_KEYS = {m._meta.db_table: m._meta.pk_attr for m in MODELS}
HYPERVISOR_COLUMNS = {"hypervisor_uri", "host_uuid"}  # 0002
BACKUP_STORE_COLUMNS = {"point_id", "logical_bytes", "added_bytes", "damage", "consistency"}  # 0003
NEW_SNAPSHOT_COLUMNS = HYPERVISOR_COLUMNS | BACKUP_STORE_COLUMNS
NEW_SCHEDULE_COLUMNS = {"task", "archive"}  # 0004: null in old schedules, read as full snapshots
NEW_COLUMNS = {"snapshot": NEW_SNAPSHOT_COLUMNS, "schedule": NEW_SCHEDULE_COLUMNS}
MIGRATIONS = [
    "0001_release_0_1",
    "0002_snapshot_hypervisor",
    "0003_backup_store_points",
    "0004_schedule_task",
    "0005_usage_samples",
    "0006_drills",
    "0007_snapshot_overview_indexes",
]

# Rows in every table, with the awkward values: microseconds, non-ASCII text, nested JSON,
# NULLs, both booleans, a 2**40 integer, each kind of hold, used and pending confirmations.
RELEASE_ROWS: dict[str, list[dict[str, Any]]] = {
    "snapshot": [
        {
            "id": 1,
            "vm_uuid": VM_A,
            "vm_name": "web-01",
            "libvirt_name": "sb-20260301-093015",
            "label": "before-upgrade",
            "description": "before the kernel upgrade — ünïcode, 'quoted'",
            "kind": "full",
            "captured_state": "running",
            "has_memory": True,
            "created_at": T0,
            "created_by": "U_ALICE",
            "origin": "manual",
            "status": "present",
            "memory_bytes": 2**40,
            "held": True,
            "hold_kind": "verified",
            "hold_until": None,
            "hold_reminded_at": T0 + timedelta(days=1),
        },
        {
            "id": 2,
            "vm_uuid": VM_A,
            "vm_name": "web-01",
            "libvirt_name": "nightly-20260302-0200",
            "label": "nightly-20260302-0200",
            "description": "",
            "kind": "full",
            "captured_state": "shutoff",
            "has_memory": False,
            "created_at": T0 + timedelta(days=1),
            "created_by": "schedule:nightly",
            "origin": "scheduled",
            "status": "missing",
            "memory_bytes": None,
            "held": True,
            "hold_kind": "until",
            "hold_until": T0 + timedelta(days=30),
            "hold_reminded_at": None,
        },
        {
            "id": 7,
            "vm_uuid": VM_B,
            "vm_name": "web-02",
            "libvirt_name": "external-1",
            "label": "external-1",
            "description": "made with virsh",
            "kind": "disk",
            "captured_state": "shutoff",
            "has_memory": False,
            "created_at": T0 - timedelta(days=400),
            "created_by": "virsh",
            "origin": "external",
            "status": "present",
            "memory_bytes": 0,
            "held": False,
            "hold_kind": None,
            "hold_until": None,
            "hold_reminded_at": None,
        },
    ],
    "operation": [
        {
            "id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "kind": "restore",
            "vm_uuid": VM_A,
            "vm_name": "web-01",
            "requested_by": "U_BOB",
            "via": "slack",
            "team": "T_ACME",
            "channel": "C_OPS",
            "status": "failed",
            "started_at": T0,
            "finished_at": T0 + timedelta(seconds=42, microseconds=7),
            "snapshot_label": "before-upgrade",
            "libvirt_name": "sb-20260301-093015",
            "stage": "starting",
            "error": "libvirt: internal error — guest crashed",
            "outcome": "reverted to the safety snapshot; web-01 is running",
            "details": {"nested": {"list": [1, 2.5, "three", None, True]}, "size": 2**40},
        },
        {
            "id": "ffeeddccbbaa99887766554433221100",
            "kind": "snapshot",
            "vm_uuid": VM_B,
            "vm_name": "web-02",
            "requested_by": "console",
            "via": "console",
            "team": None,
            "channel": None,
            "status": "running",
            "started_at": T0 + timedelta(hours=2),
            "finished_at": None,
            "snapshot_label": None,
            "libvirt_name": None,
            "stage": None,
            "error": None,
            "outcome": None,
            "details": {},
        },
    ],
    "vm_lock": [
        {
            "vm_uuid": VM_B,
            "operation_id": "ffeeddccbbaa99887766554433221100",
            "owner": "host-a:1234:abcd",
            "acquired_at": T0 + timedelta(hours=2),
            "heartbeat_at": T0 + timedelta(hours=2, seconds=30),
        }
    ],
    "confirmation": [
        {
            "id": "c0ffee00c0ffee00c0ffee00c0ffee00",
            "kind": "restore",
            "requested_by": "U_BOB",
            "team": "T_ACME",
            "channel": "C_OPS",
            "vm_name": "web-01",
            "payload": {"vm": "web-01", "snapshots": ["sb-a", "sb-b"], "paused": False},
            "created_at": T0,
            "expires_at": T0 + timedelta(minutes=15),
            "used_at": T0 + timedelta(minutes=1),
            "used_by": "U_BOB",
        },
        {
            "id": "deadbeefdeadbeefdeadbeefdeadbeef",
            "kind": "prune",
            "requested_by": "U_ALICE",
            "team": None,
            "channel": None,
            "vm_name": None,
            "payload": {},
            "created_at": T0,
            "expires_at": T0 + timedelta(minutes=15),
            "used_at": None,
            "used_by": None,
        },
    ],
    "schedule": [
        {
            "id": 3,
            "name": "nightly",
            "vms": "web-*",
            "cadence": "daily",
            "minute": "0",
            "hour": "2",
            "day": "*",
            "month": "*",
            "day_of_week": "*",
            "timezone": "Europe/Berlin",
            "policy": {"keep_last": 3, "keep_daily": 7},
            "channel": "C_OPS",
            "owner": "U_ALICE",
            "created_at": T0 - timedelta(days=10),
            "grace_seconds": 3600,
            "enabled": True,
            "last_fire": T0,
        },
        {
            "id": 4,
            "name": "weekdays",
            "vms": "all",
            "cadence": "cron",
            "minute": "30",
            "hour": "2",
            "day": "*",
            "month": "*",
            "day_of_week": "mon-fri",
            "timezone": "UTC",
            "policy": None,
            "channel": None,
            "owner": "console",
            "created_at": T0 - timedelta(days=3),
            "grace_seconds": 0,
            "enabled": False,
            "last_fire": None,
        },
    ],
    "schedule_run": [
        {
            "id": 11,
            "schedule_id": 3,
            "fire_time": T0,
            "owner": "host-a:1234:abcd",
            "started_at": T0 + timedelta(seconds=1),
            "finished_at": T0 + timedelta(minutes=3),
            "status": "done",
            "report": {"vms": [{"vm": "web-01", "ok": True, "seconds": 12.5}], "pruned": []},
        },
        {
            "id": 12,
            "schedule_id": 3,
            "fire_time": T0 + timedelta(days=1),
            "owner": "host-a:1234:abcd",
            "started_at": T0 + timedelta(days=1, seconds=1),
            "finished_at": None,
            "status": "running",
            "report": {},
        },
    ],
    "lease": [
        {
            "name": "scheduler",
            "holder": "host-a:1234:abcd",
            "expires_at": T0 + timedelta(seconds=30),
            "token": 2**40 + 5,
        }
    ],
}


# --- building release 0.1's catalogue ----------------------------------------------------------


def _literal(value: object) -> str:
    """A SQL literal, in the form release 0.1's tortoise wrote the value: datetimes as
    ``str(datetime)`` (``2026-03-01 09:30:15.123456+00:00``), JSON compact, booleans as
    TRUE/FALSE (SQLite stores 1/0, as tortoise did)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        text = str(value)
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text.replace("'", "''") + "'"


def _release_rows_sql() -> str:
    statements = []
    for table, rows in RELEASE_ROWS.items():
        for row in rows:
            columns = ", ".join(f'"{c}"' for c in row)
            values = ", ".join(_literal(v) for v in row.values())
            statements.append(f'INSERT INTO "{table}" ({columns}) VALUES ({values});')
    return "\n".join(statements)


def _is_sqlite(url: str) -> bool:
    return urlsplit(url).scheme == "sqlite"


def _sqlite_path(url: str) -> Path:
    return Path(urlsplit(url).path)


async def _build_release_catalogue(url: str, *, rows: bool = True) -> None:
    """The database a release 0.1 user has: its tables, and rows in all of them."""
    dialect = "sqlite" if _is_sqlite(url) else "postgres"
    script = (DATA / f"release_0_1_schema.{dialect}.sql").read_text()
    if rows:
        script += "\n" + _release_rows_sql()
    if _is_sqlite(url):
        db = sqlite3.connect(_sqlite_path(url))
        try:
            db.execute("PRAGMA journal_mode=WAL")  # as release 0.1 opened it
            db.executescript(script)
        finally:
            db.close()
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(script)
        # Release 0.1 inserted the serial ids through the sequences; the fixed ids above
        # did not, so move the sequences on as that release's own inserts would have.
        for table in ("snapshot", "schedule", "schedule_run"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
    finally:
        await conn.close()


@asynccontextmanager
async def _open(url: str) -> AsyncIterator[TortoiseContext]:
    # tortoise caches INSERT SQL per table across backends (see test_catalogue_backends).
    EXECUTOR_CACHE.clear()
    try:
        async with open_database(url) as ctx:
            yield ctx
    finally:
        EXECUTOR_CACHE.clear()


async def _rows() -> dict[str, dict[object, dict[str, Any]]]:
    """Every row of every table, read through the current models, keyed by primary key."""
    found: dict[str, dict[object, dict[str, Any]]] = {}
    for model in MODELS:
        pk = PRIMARY_KEYS[model._meta.db_table]
        found[model._meta.db_table] = {r[pk]: r for r in await model.all().values()}
    return found


def _backups(url: str) -> list[Path]:
    path = _sqlite_path(url)
    return sorted(path.parent.glob(f"{path.name}.bak-*"))


async def _columns(ctx: TortoiseContext, table: str) -> set[str]:
    conn = ctx.db()
    if conn.capabilities.dialect == "postgres":
        rows = await conn.execute_query_dict(
            "SELECT column_name AS c FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1",
            [table],
        )
    else:
        rows = await conn.execute_query_dict("SELECT name AS c FROM pragma_table_info(?)", [table])
    return {str(r["c"]) for r in rows}


async def _schema(ctx: TortoiseContext) -> dict[str, object]:
    """Tables, columns (type, nullability) and indexes/unique constraints by their columns:
    what the code relies on, not the names tortoise gave them."""
    conn = ctx.db()
    if conn.capabilities.dialect == "postgres":
        columns = await conn.execute_query_dict(
            "SELECT table_name AS t, column_name AS c, data_type AS type, is_nullable AS n, "
            "character_maximum_length AS len, column_default AS dflt "
            "FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        indexes = await conn.execute_query_dict(
            "SELECT t.relname AS t, i.indisunique AS u, i.indisprimary AS p, "
            "array_to_string(array(SELECT a.attname FROM unnest(i.indkey) k "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k ORDER BY a.attname), ',') AS cols "
            "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_namespace s ON s.oid = t.relnamespace WHERE s.nspname = current_schema()"
        )
        # A serial's default names its sequence; only whether there is one matters.
        for c in columns:
            c["dflt"] = str(c["dflt"]).split("(")[0]
    else:
        columns = await conn.execute_query_dict(
            'SELECT m.name AS t, p.name AS c, p.type AS type, p."notnull" AS n, p.pk AS pk, '
            "p.dflt_value AS dflt FROM sqlite_master m, pragma_table_info(m.name) p "
            "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
        )
        indexes = await conn.execute_query_dict(
            'SELECT m.name AS t, l."unique" AS u, l.origin AS p, '
            "(SELECT group_concat(name, ',') FROM (SELECT i.name FROM pragma_index_info(l.name) i "
            "ORDER BY i.name)) AS cols "
            "FROM sqlite_master m, pragma_index_list(m.name) l WHERE m.type = 'table'"
        )
    return {
        "columns": sorted(tuple(sorted(c.items())) for c in columns),
        "indexes": sorted((i["t"], i["cols"], bool(i["u"]), str(i["p"])) for i in indexes),
    }


# --- the upgrade -------------------------------------------------------------------------------


async def test_schedules_of_a_release_catalogue_keep_taking_full_snapshots(
    database_url: str,
) -> None:
    await _build_release_catalogue(database_url)
    async with _open(database_url):
        schedules = await TortoiseCatalogue(SystemClock()).schedules()
    assert schedules
    assert {s.task for s in schedules} == {ScheduleTask.SNAPSHOT}
    assert not any(s.archive for s in schedules)


async def test_release_catalogue_is_upgraded_with_every_row_intact(database_url: str) -> None:
    await _build_release_catalogue(database_url)

    async with _open(database_url) as ctx:
        rows = await _rows()
        assert await _columns(ctx, "snapshot") >= NEW_SNAPSHOT_COLUMNS
        # A record of the new kind can be written and read back.
        await models.SnapshotRow.filter(id=7).update(
            hypervisor_uri="qemu+ssh://kvm-2/system", host_uuid=VM_A
        )
        [moved] = await models.SnapshotRow.filter(id=7).values("hypervisor_uri", "host_uuid")
        # New rows continue the release's ids instead of colliding with them.
        fields = {k: v for k, v in RELEASE_ROWS["schedule"][1].items() if k != "id"}
        added = await models.ScheduleRow.create(**{**fields, "name": "added-after-upgrade"})

    changed = []
    for table, expected in RELEASE_ROWS.items():
        pk = PRIMARY_KEYS[table]
        extra = dict.fromkeys(NEW_COLUMNS.get(table, ()))
        for row in expected:
            if rows[table].get(row[pk]) != {**row, **extra}:
                changed.append((table, row, rows[table].get(row[pk])))
        changed += [
            (table, None, r) for k, r in rows[table].items() if k not in {e[pk] for e in expected}
        ]
    total = sum(len(r) for r in RELEASE_ROWS.values())
    values = sum(len(row) for r in RELEASE_ROWS.values() for row in r)
    backend = urlsplit(database_url).scheme
    record(
        f"Catalogue upgrade from release 0.1 ({backend})",
        f"release 0.1's own tables, {total} rows in all {len(RELEASE_ROWS)} tables, "
        "upgraded at start",
        f"{values} values compared, {len(changed)} rows lost or changed",
        lost=len(changed),
        passed=not changed,
    )
    assert changed == []
    assert moved == {"hypervisor_uri": "qemu+ssh://kvm-2/system", "host_uuid": VM_A}
    assert added.id > 4


# Where snapbot 0.2 (migration 0002) left its rows: which hypervisor each VM lives on.
HYPERVISORS: dict[int, dict[str, Any]] = {
    1: {"hypervisor_uri": "qemu:///system", "host_uuid": "33333333-3333-3333-3333-333333333333"},
    7: {"hypervisor_uri": "qemu+ssh://kvm-2/system", "host_uuid": VM_B},
}


async def _build_0002_catalogue(url: str) -> None:
    """The database a user of the version whose newest migration was 0002 has: release 0.1's
    catalogue migrated to 0002 (recorded, columns added), hypervisors filled in."""
    await _build_release_catalogue(url)
    EXECUTOR_CACHE.clear()
    try:
        async with TortoiseContext() as ctx:
            await ctx.init(db_url=url, modules={APP: ["core.catalogue.models"]})
            executor = MigrationExecutor(ctx.db(), {APP: TORTOISE_ORM["apps"][APP]})
            await executor.migrate([MigrationTarget(APP, "0001_release_0_1")], fake=True)
            await executor.migrate([MigrationTarget(APP, "0002_snapshot_hypervisor")])
            assert not await _columns(ctx, "snapshot") & BACKUP_STORE_COLUMNS
            for row_id, values in HYPERVISORS.items():
                await ctx.db().execute_script(
                    'UPDATE "snapshot" SET '
                    + ", ".join(f'"{c}" = {_literal(v)}' for c, v in values.items())
                    + f" WHERE id = {row_id}"
                )
    finally:
        EXECUTOR_CACHE.clear()


async def test_0002_catalogue_is_upgraded_with_every_value_intact(database_url: str) -> None:
    await _build_0002_catalogue(database_url)

    async with _open(database_url) as ctx:
        rows = await _rows()
        recorded = await MigrationRecorder(ctx.db()).applied_migrations()
        # The new columns take a restore point's values through the catalogue's own code.
        await TortoiseCatalogue(SystemClock()).archive_snapshot(
            VM_A,
            "sb-20260301-093015",
            point_id="20260301T093015Z-1a2b3c4d",
            logical_bytes=3 * 2**40,
            added_bytes=2**33,
        )
        await TortoiseCatalogue(SystemClock()).set_backup_damage(
            VM_A, "sb-20260301-093015", "disk vda: 1 chunk missing — ünïcode"
        )
        await models.SnapshotRow.filter(id=1).update(consistency="crash-consistent")
        [archived] = await models.SnapshotRow.filter(id=1).values(
            "kind",
            "has_memory",
            "memory_bytes",
            "label",
            "held",
            "hold_kind",
            *BACKUP_STORE_COLUMNS,
        )

    changed = []
    for table, expected in RELEASE_ROWS.items():
        pk = PRIMARY_KEYS[table]
        for row in expected:
            want = {**row, **dict.fromkeys(NEW_COLUMNS.get(table, ()))}
            if table == "snapshot":
                want = {
                    **row,
                    **dict.fromkeys(NEW_SNAPSHOT_COLUMNS),
                    **HYPERVISORS.get(row["id"], {}),
                }
            if rows[table].get(row[pk]) != want:
                changed.append((table, want, rows[table].get(row[pk])))
        changed += [
            (table, None, r) for k, r in rows[table].items() if k not in {e[pk] for e in expected}
        ]
    total = sum(len(r) for r in RELEASE_ROWS.values())
    values = sum(len(row) for r in rows.values() for row in r.values())
    backend = urlsplit(database_url).scheme
    record(
        f"Catalogue upgrade from migration 0002 ({backend})",
        f"a 0002 catalogue, {total} rows in all {len(RELEASE_ROWS)} tables, upgraded at start",
        f"{values} values compared, {len(changed)} rows lost or changed",
        lost=len(changed),
        passed=not changed,
    )
    assert changed == []
    assert [k.name for k in recorded] == MIGRATIONS
    assert archived == {
        "kind": "archived",
        "has_memory": False,
        "memory_bytes": None,
        "label": "before-upgrade",
        "held": True,
        "hold_kind": "verified",
        "point_id": "20260301T093015Z-1a2b3c4d",
        "logical_bytes": 3 * 2**40,
        "added_bytes": 2**33,
        "damage": "disk vda: 1 chunk missing — ünïcode",
        "consistency": "crash-consistent",
    }
    if _is_sqlite(database_url):
        [backup] = _backups(database_url)
        assert backup.name.endswith("-0002_snapshot_hypervisor")


async def test_upgraded_release_catalogue_has_the_schema_a_fresh_one_gets(
    database_url: str, tmp_path: Path
) -> None:
    await _build_release_catalogue(database_url)
    async with _open(database_url) as ctx:
        upgraded = await _schema(ctx)
    if _is_sqlite(database_url):
        fresh_url = f"sqlite://{tmp_path / 'fresh.db'}"
        async with _open(fresh_url) as ctx:
            fresh = await _schema(ctx)
    else:
        # A fresh PostgreSQL database needs a second database; dropping and rebuilding this
        # one's tables is the same thing.
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()
        async with _open(database_url) as ctx:
            fresh = await _schema(ctx)
    assert upgraded == fresh


async def test_fresh_database_gets_the_full_schema_and_no_backup(database_url: str) -> None:
    async with _open(database_url) as ctx:
        for model in MODELS:
            fields = set(model._meta.fields_db_projection.values())
            assert await _columns(ctx, model._meta.db_table) == fields, model
        recorded = await MigrationRecorder(ctx.db()).applied_migrations()
        await models.SnapshotRow.create(
            **{k: v for k, v in RELEASE_ROWS["snapshot"][0].items() if k != "id"},
            hypervisor_uri="qemu:///system",
            host_uuid=VM_B,
        )
        [row] = await models.SnapshotRow.all().values("hypervisor_uri", "host_uuid")
    assert [k.name for k in recorded] == MIGRATIONS
    assert row == {"hypervisor_uri": "qemu:///system", "host_uuid": VM_B}
    if _is_sqlite(database_url):
        assert _backups(database_url) == []


async def test_second_start_migrates_nothing_and_backs_up_nothing(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _build_release_catalogue(database_url)
    async with _open(database_url):
        first = await _rows()
    backups = _backups(database_url) if _is_sqlite(database_url) else []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="core.catalogue.db"):
        async with _open(database_url) as ctx:
            second = await _rows()
            recorded = await MigrationRecorder(ctx.db()).applied_migrations()
    assert second == first
    assert [k.name for k in recorded] == MIGRATIONS
    assert [r.getMessage() for r in caplog.records] == []
    if _is_sqlite(database_url):
        assert len(backups) == 1
        assert _backups(database_url) == backups


async def test_sqlite_backup_is_logged_and_holds_the_release_catalogue_including_its_wal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path / 'snapbot.db'}"
    await _build_release_catalogue(url, rows=False)
    # A release process still running (or killed) leaves its last commits in the WAL, not yet
    # in the database file: a plain copy of the file would lose them.
    release = sqlite3.connect(_sqlite_path(url))
    try:
        release.execute("PRAGMA journal_mode=WAL")
        release.execute("PRAGMA wal_autocheckpoint=0")
        release.executescript(_release_rows_sql())
        assert (tmp_path / "snapbot.db-wal").stat().st_size > 0
        with caplog.at_level(logging.WARNING, logger="core.catalogue.db"):
            async with _open(url):
                pass
    finally:
        release.close()

    [backup] = _backups(url)
    assert backup.name.startswith("snapbot.db.bak-")
    assert backup.name.endswith("-0001_release_0_1")
    assert any(str(backup) in r.getMessage() for r in caplog.records), caplog.text
    copy = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        snapshot_columns = {r[1] for r in copy.execute("PRAGMA table_info(snapshot)")}
        counts = {
            t: copy.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in RELEASE_ROWS
        }
        [label, held] = copy.execute("SELECT label, held FROM snapshot WHERE id = 1").fetchone()
    finally:
        copy.close()
    assert not snapshot_columns & NEW_SNAPSHOT_COLUMNS  # the old schema, as it was
    assert counts == {t: len(rows) for t, rows in RELEASE_ROWS.items()}
    assert (label, held) == ("before-upgrade", 1)
    # The copy is a catalogue snapbot can upgrade again: it is the way back.
    async with _open(f"sqlite://{backup}"):
        restored = await _rows()
    assert restored["snapshot"][1]["label"] == "before-upgrade"
    assert len(restored["operation"]) == len(RELEASE_ROWS["operation"])


@pytest.fixture(params=[d for d in backends.DATABASES if d != "sqlite"])
async def shared_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database several snapbot processes share (PostgreSQL; SQLite serves one process)."""
    async with backends._database(request.param, tmp_path) as url:
        yield url


async def test_processes_starting_together_upgrade_the_catalogue_once(
    shared_database_url: str,
) -> None:
    """After an upgrade every replica on a shared PostgreSQL starts at once; all must come up."""
    database_url = shared_database_url
    await _build_release_catalogue(database_url)

    async def start() -> dict[str, dict[object, dict[str, Any]]]:
        async with open_database(database_url):
            return await _rows()

    EXECUTOR_CACHE.clear()
    try:
        seen = await asyncio.gather(*(start() for _ in range(3)))
    finally:
        EXECUTOR_CACHE.clear()
    assert seen[0] == seen[1] == seen[2]
    assert len(seen[0]["snapshot"]) == len(RELEASE_ROWS["snapshot"])
    async with _open(database_url) as ctx:
        recorded = await MigrationRecorder(ctx.db()).applied_migrations()
    assert [k.name for k in recorded] == MIGRATIONS


async def test_catalogue_at_an_earlier_migration_is_backed_up_under_that_schema(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path / 'snapbot.db'}"
    await _build_release_catalogue(url)
    async with TortoiseContext() as ctx:
        # What a version whose newest migration was 0001 leaves: the record, no new columns.
        await ctx.init(db_url=url, modules={APP: ["core.catalogue.models"]})
        executor = MigrationExecutor(ctx.db(), {APP: TORTOISE_ORM["apps"][APP]})
        await executor.migrate([MigrationTarget(APP, "0001_release_0_1")], fake=True)

    async with _open(url) as ctx:
        assert await _columns(ctx, "snapshot") >= NEW_SNAPSHOT_COLUMNS
    [backup] = _backups(url)
    assert backup.name.endswith("-0001_release_0_1")


# --- refusals ----------------------------------------------------------------------------------


async def test_database_newer_than_the_code_is_refused_and_left_alone(database_url: str) -> None:
    async with _open(database_url) as ctx:
        await MigrationRecorder(ctx.db()).record_applied(APP, "0099_from_a_newer_snapbot")
        before = await _schema(ctx)
        rows = await _rows()

    with pytest.raises(CatalogueIncompatible) as refused:
        async with _open(database_url):
            pytest.fail("a database newer than the code was opened")
    message = str(refused.value)
    assert "0099_from_a_newer_snapbot" in message
    assert "newer snapbot" in message
    assert MIGRATIONS[-1] in message  # what this code knows

    async with TortoiseContext() as ctx:
        # Look without migrating: open_database would refuse again.
        await ctx.init(db_url=database_url, modules={APP: ["core.catalogue.models"]})
        EXECUTOR_CACHE.clear()
        assert await _schema(ctx) == before
        assert await _rows() == rows
    EXECUTOR_CACHE.clear()
    if _is_sqlite(database_url):
        assert _backups(database_url) == []


def test_snapbot_refuses_to_start_on_a_newer_database(tmp_path: Path) -> None:
    """What an operator who downgraded sees: the reason on stderr, exit status 2."""
    db = tmp_path / "snapbot.db"
    script = (
        "import asyncio\n"
        "from tortoise.migrations.recorder import MigrationRecorder\n"
        "from core.catalogue.db import open_database\n"
        "async def main():\n"
        f"    async with open_database('sqlite://{db}') as ctx:\n"
        "        await MigrationRecorder(ctx.db()).record_applied('snapbot', '0009_future')\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).parents[2]
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SNAPBOT_"))}
    env |= {
        "DATABASE_URL": f"sqlite://{db}",
        "LIBVIRT_URI": "test:///default",
        "SNAPBOT_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "0009_future" in done.stderr
    assert "newer snapbot" in done.stderr
    assert "Traceback" not in done.stderr


async def test_failed_migration_is_rolled_back_and_named(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _build_release_catalogue(database_url)
    monkeypatch.setitem(
        TORTOISE_ORM["apps"][APP], "migrations", "tests.contract.data.failing_migrations"
    )
    with pytest.raises(CatalogueIncompatible) as refused:
        async with _open(database_url):
            pytest.fail("a catalogue whose upgrade failed was opened")
    monkeypatch.undo()
    message = str(refused.value)
    assert "failed in migration 0003_breaks" in message
    assert "0002_snapshot_hypervisor went through" in message
    if _is_sqlite(database_url):
        [backup] = _backups(database_url)
        assert str(backup) in message

    # The failed migration left nothing behind; this version's own schema opens normally.
    async with _open(database_url) as ctx:
        columns = await _columns(ctx, "snapshot")
        recorded = await MigrationRecorder(ctx.db()).applied_migrations()
        rows = await _rows()
    assert "doomed" not in columns
    assert columns >= NEW_SNAPSHOT_COLUMNS
    assert [k.name for k in recorded] == MIGRATIONS
    assert {t: len(r) for t, r in rows.items()} == {t: len(r) for t, r in RELEASE_ROWS.items()}


async def test_partial_release_schema_is_refused_by_name(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'snapbot.db'}"
    await _build_release_catalogue(url)
    db = sqlite3.connect(_sqlite_path(url))
    try:
        db.execute('ALTER TABLE "schedule" DROP COLUMN "last_fire"')  # as before that column
        db.commit()
    finally:
        db.close()
    with pytest.raises(CatalogueIncompatible, match=r"missing schedule\.last_fire"):
        async with _open(url):
            pytest.fail("an unrecognised schema was migrated")
    assert _backups(url) == []


# --- the migrations themselves ----------------------------------------------------------------


async def test_models_and_migrations_agree() -> None:
    """A model change without its migration would reach users as a missing column."""
    async with TortoiseContext() as ctx:
        await ctx.init(config=TORTOISE_ORM)
        assert ctx.apps is not None
        pending = await MigrationAutodetector(ctx.apps, {APP: TORTOISE_ORM["apps"][APP]}).changes()
    assert [w.name for w in pending] == []
