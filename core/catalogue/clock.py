"""Clocks: this host's, for what people see, and the database's, for what replicas must agree on."""

from __future__ import annotations

from datetime import UTC, datetime

from tortoise import connections


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def aware(value: object) -> datetime:
    """A timestamp from the database server, as an aware UTC datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class TortoiseDatabaseClock:
    """``DatabaseClock`` on the open tortoise connection."""

    async def database_now(self) -> datetime:
        # The database's clock, not ours: processes on hosts with skewed clocks still agree
        # on when a lease expires or a lock's heartbeat went stale.
        conn = connections.get("default")
        rows = await conn.execute_query_dict("SELECT CURRENT_TIMESTAMP AS now")
        return aware(rows[0]["now"])
