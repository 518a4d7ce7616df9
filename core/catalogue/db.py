"""Open the catalogue database: URL normalisation, schema, SQLite durability settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from tortoise.context import TortoiseContext

MODELS: dict[str, Iterable[str | ModuleType]] = {"snapbot": ["core.catalogue.models"]}
# FULL: the operations table is the crash-surviving lock; a lost commit would be a lost lock.
_SQLITE_PRAGMAS = "journal_mode=WAL&synchronous=FULL&busy_timeout=5000"


def sqlite_url(path: Path) -> str:
    """The tortoise URL of a SQLite file."""
    return f"sqlite://{path}?{_SQLITE_PRAGMAS}"


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
    """Initialise tortoise for snapbot's models, create missing tables, and close on exit."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and ":memory:" not in url:
        Path(parts.path).parent.mkdir(parents=True, exist_ok=True)
    async with TortoiseContext() as ctx:
        await ctx.init(db_url=normalise_url(url), modules=MODELS)
        await ctx.generate_schemas(safe=True)
        yield ctx
