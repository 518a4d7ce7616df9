"""The catalogue database's migration state, read without changing anything (``snapbot
doctor``); ``core.catalogue.db.migrate`` is what applies migrations, at start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from tortoise.context import TortoiseContext
from tortoise.migrations.executor import MigrationExecutor

from core.catalogue.db import APP, TORTOISE_ORM, _is_release_0_1, normalise_url
from core.errors import CoreError, InvalidInput
from core.services.doctor import Schema, SchemaState


class CatalogueSchemaProbe:
    async def schema(self, database_url: str) -> Schema:
        parts = urlsplit(database_url)
        if parts.scheme == "sqlite" and ":memory:" not in database_url:
            path = Path(parts.path)
            if not await asyncio.to_thread(path.exists):
                # Opening it would create it; the first start does that (and migrates).
                if not await asyncio.to_thread(path.parent.is_dir):
                    raise InvalidInput(f"the directory {path.parent} does not exist")
                return Schema(SchemaState.EMPTY)
        config = {
            "connections": {"default": normalise_url(database_url)},
            "apps": TORTOISE_ORM["apps"],
        }
        try:
            async with TortoiseContext() as ctx:
                await ctx.init(config=config)
                # The migration recorder reads nothing from a database it cannot reach and says
                # "no migrations"; ask the database itself first.
                await ctx.db().execute_query("SELECT 1")
                executor = MigrationExecutor(ctx.db(), {APP: TORTOISE_ORM["apps"][APP]})
                steps = await executor.plan()
                known = set(executor.loader.disk_migrations)
                applied = {k for k in executor.loader.applied_migrations if k.app_label == APP}
                # Release 0.1's tables without a migration record: the start upgrades them.
                release_0_1 = not applied and await _is_release_0_1(ctx.db(), executor)
        except CoreError:
            raise
        except Exception as exc:  # whatever the driver says, the operator needs it
            raise InvalidInput(f"{type(exc).__name__}: {exc}") from exc
        if unknown := sorted(k.name for k in applied - known):
            return Schema(SchemaState.NEWER_THAN_CODE, tuple(unknown))
        if release_0_1:
            return Schema(SchemaState.NEEDS_UPGRADE, tuple(s.migration.name for s in steps))
        if not applied:
            return Schema(SchemaState.EMPTY)
        if steps:
            return Schema(SchemaState.NEEDS_UPGRADE, tuple(s.migration.name for s in steps))
        return Schema(SchemaState.UP_TO_DATE)
