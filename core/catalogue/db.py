"""Open the catalogue database: URL normalisation, schema migrations, SQLite durability settings.

The schema is owned by the migrations in ``core.catalogue.migrations`` (tortoise's built-in
migration engine), applied every time the catalogue opens. ``0001_release_0_1`` is the schema
release 0.1 created with ``generate_schemas``; a catalogue from that release has tables but no
migration record, and is recognised by its columns and recorded as being at 0001.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.sqlite.client import SqliteClient
from tortoise.context import TortoiseContext
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget
from tortoise.migrations.graph import MigrationKey
from tortoise.migrations.operations import CreateModel

from core.errors import InvalidInput

log = logging.getLogger(__name__)

APP = "snapbot"
MIGRATIONS = "core.catalogue.migrations"
MODELS: dict[str, Iterable[str | ModuleType]] = {APP: ["core.catalogue.models"]}
# What release 0.1's generate_schemas made; never edit it, add a migration instead.
BASELINE = "0001_release_0_1"
# Also what tortoise's CLI uses (pyproject.toml [tool.tortoise]): `tortoise makemigrations`
# compares the models with the migrations and needs no real database.
TORTOISE_ORM: dict[str, Any] = {
    "connections": {"default": "sqlite://:memory:"},
    "apps": {APP: {"models": MODELS[APP], "migrations": MIGRATIONS}},
}
# Any constant: all snapbot processes sharing a PostgreSQL database take the same lock, so of
# several replicas starting after an upgrade one migrates and the others then find nothing to do.
_PG_MIGRATION_LOCK = 0x736E6170626F74  # "snapbot"
# FULL: the operations table is the crash-surviving lock; a lost commit would be a lost lock.
_SQLITE_PRAGMAS = "journal_mode=WAL&synchronous=FULL&busy_timeout=5000"


class CatalogueIncompatible(InvalidInput):
    """The database's schema is not one this version of snapbot can use or upgrade."""


def normalise_url(url: str) -> str:
    """Accept the spellings people use (``postgresql://``, ``sqlite:///abs``) and add SQLite's
    durability settings when the URL has none."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgresql+asyncpg", "asyncpg"):
        return "postgres" + url[len(parts.scheme) :]
    if parts.scheme == "sqlite" and "?" not in url and ":memory:" not in url:
        return f"{url}?{_SQLITE_PRAGMAS}"
    return url


@asynccontextmanager
async def open_database(url: str) -> AsyncIterator[TortoiseContext]:
    """Initialise tortoise for snapbot's models, bring the schema up to date, close on exit.

    Raises ``CatalogueIncompatible`` for a database this code must not use.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and ":memory:" not in url:
        Path(parts.path).parent.mkdir(parents=True, exist_ok=True)
    config = {"connections": {"default": normalise_url(url)}, "apps": TORTOISE_ORM["apps"]}
    async with TortoiseContext() as ctx:
        await ctx.init(config=config)
        await migrate(ctx.db())
        yield ctx


async def migrate(conn: BaseDBAsyncClient) -> list[str]:
    """Apply the migrations the database lacks; return their names (empty when up to date).

    A SQLite catalogue with data is backed up next to its file first.
    """
    async with _migration_lock(conn):
        executor = MigrationExecutor(conn, {APP: TORTOISE_ORM["apps"][APP]})
        steps = await executor.plan()
        known = set(executor.loader.disk_migrations)
        applied = {k for k in executor.loader.applied_migrations if k.app_label == APP}
        if unknown := sorted(k.name for k in applied - known):
            raise CatalogueIncompatible(_too_new(conn, unknown, _in_order(executor)[-1].name))
        if not steps:
            return []
        baseline = not applied and await _is_release_0_1(conn, executor)
        backup: Path | None = None
        if isinstance(conn, SqliteClient) and (applied or baseline):
            current = BASELINE if baseline else _latest(applied, executor)
            backup = await asyncio.to_thread(_backup_sqlite, Path(conn.filename), current)
            log.warning(
                "Catalogue %s is at schema %s; backed it up to %s before upgrading",
                conn.filename,
                current,
                backup,
            )
        if baseline:
            await executor.migrate([MigrationTarget(APP, BASELINE)], fake=True)
        started: list[str] = []

        def progress(event: str, _app: str, name: str) -> None:
            if event == "apply_start":
                started.append(name)

        try:
            await executor.migrate(direction="forward", progress=progress)
        except Exception as exc:  # whatever the database said, the operator needs the context
            raise CatalogueIncompatible(_failed(conn, started, backup, exc)) from exc
        log.info("Catalogue schema migrations applied: %s", ", ".join(started))
        return started


def _migration_lock(conn: BaseDBAsyncClient) -> AbstractAsyncContextManager[object]:
    if conn.capabilities.dialect == "postgres":
        return _postgres_lock(conn)
    # SQLite serves one snapbot process (README); each migration is its own transaction.
    return nullcontext()


@asynccontextmanager
async def _postgres_lock(conn: BaseDBAsyncClient) -> AsyncIterator[object]:
    # A session lock on a connection of its own: the migrations run their own transactions on
    # other pooled connections while this one holds the lock.
    async with conn.acquire_connection() as raw:
        await raw.execute("SELECT pg_advisory_lock($1)", _PG_MIGRATION_LOCK)
        try:
            yield raw
        finally:
            await raw.execute("SELECT pg_advisory_unlock($1)", _PG_MIGRATION_LOCK)


def _release_0_1_tables(executor: MigrationExecutor) -> dict[str, set[str]]:
    """Table → columns of the baseline migration, which is release 0.1's schema."""
    baseline = executor.loader.disk_migrations[MigrationKey(APP, BASELINE)]
    return {
        str((op.options or {})["table"]): {
            getattr(field, "source_field", None) or name for name, field in op.fields
        }
        for op in baseline.operations
        if isinstance(op, CreateModel)
    }


async def _is_release_0_1(conn: BaseDBAsyncClient, executor: MigrationExecutor) -> bool:
    """True for a catalogue release 0.1 made (its tables, no migration record), False for an
    empty database; anything in between is refused rather than guessed at."""
    expected = _release_0_1_tables(executor)
    present = await _columns(conn, expected)
    if not present:
        return False
    missing = [
        f"{table}.{column}"
        for table, columns in sorted(expected.items())
        for column in sorted(columns - present.get(table, set()))
    ]
    if missing:
        raise CatalogueIncompatible(
            f"The catalogue database {_where(conn)} has some of snapbot's tables but not the "
            f"schema of release 0.1, which this version upgrades from: missing "
            f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}. It was made by an "
            "older or modified snapbot. Start this version with a new DATABASE_URL (snapbot "
            "rebuilds snapshot names from libvirt) or restore the database from a backup."
        )
    return True


async def _columns(conn: BaseDBAsyncClient, tables: Iterable[str]) -> dict[str, set[str]]:
    names = sorted(tables)
    if conn.capabilities.dialect == "postgres":
        query = (
            "SELECT table_name AS t, column_name AS c FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ANY($1::text[])"
        )
        rows: Sequence[dict[str, Any]] = await conn.execute_query_dict(query, [names])
    else:
        marks = ", ".join("?" for _ in names)
        query = (
            "SELECT m.name AS t, p.name AS c FROM sqlite_master AS m, pragma_table_info(m.name)"
            f" AS p WHERE m.type = 'table' AND m.name IN ({marks})"
        )
        rows = await conn.execute_query_dict(query, names)
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(str(row["t"]), set()).add(str(row["c"]))
    return found


def _in_order(executor: MigrationExecutor) -> list[MigrationKey]:
    """snapbot's migrations on disk, each after the ones it depends on."""
    graph = executor.loader.graph
    order: list[MigrationKey] = []
    for leaf in graph.leaf_nodes(APP):
        order += [k for k in graph.forwards_plan(leaf) if k not in order]
    return order


def _latest(applied: set[MigrationKey], executor: MigrationExecutor) -> str:
    return [k for k in _in_order(executor) if k in applied][-1].name


def _too_new(conn: BaseDBAsyncClient, unknown: list[str], newest: str) -> str:
    if isinstance(conn, SqliteClient):
        way_back = (
            "or use the copy snapbot made before that upgrade, next to it: "
            f"{conn.filename}.bak-TIME-SCHEMA"
        )
    else:
        way_back = "or restore the dump taken before that upgrade"
    return (
        f"The catalogue database {_where(conn)} has schema migrations this version of snapbot "
        f"does not know ({', '.join(unknown)}; the newest it knows is {newest}): a newer "
        f"snapbot upgraded it. Run that newer version, {way_back}. Nothing was changed."
    )


def _failed(
    conn: BaseDBAsyncClient, started: list[str], backup: Path | None, error: Exception
) -> str:
    failed = started[-1] if started else "(before the first migration)"
    done = f" ({', '.join(started[:-1])} went through)" if len(started) > 1 else ""
    saved = f" The catalogue as it was before the upgrade is in {backup}." if backup else ""
    return (
        f"Upgrading the catalogue database {_where(conn)} failed in migration {failed}: "
        f"{type(error).__name__}: {error}. That migration was rolled back{done}, and this "
        f"version of snapbot cannot run without it.{saved} Keep running the previous version "
        "(restoring the backup if anything went through) and report this message."
    )


def _where(conn: BaseDBAsyncClient) -> str:
    if isinstance(conn, SqliteClient):
        return conn.filename
    return f"(PostgreSQL database {getattr(conn, 'database', '?')})"


def _backup_sqlite(path: Path, schema: str) -> Path:
    """Copy the catalogue with SQLite's online backup API, which, unlike a file copy, includes
    what is still in the WAL. The copy gets the original's permissions from the start."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    mode = path.stat().st_mode & 0o777
    for n in range(100):
        target = path.with_name(f"{path.name}.bak-{stamp}-{schema}" + (f".{n}" if n else ""))
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free backup name for {path} at {stamp}")
    source = sqlite3.connect(path)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return target
