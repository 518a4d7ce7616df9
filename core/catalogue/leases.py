"""``LeaseStore`` on tortoise: leadership among bot processes sharing one database, judged by
the database's clock, with a fencing token that grows with every change of holder."""

from __future__ import annotations

from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from core.catalogue.clock import TortoiseDatabaseClock
from core.catalogue.models import LeaseRow


class TortoiseLeases(TortoiseDatabaseClock):
    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> int | None:
        now = await self.database_now()
        expires = now + ttl
        if await LeaseRow.filter(name=name, holder=holder, expires_at__gte=now).update(
            expires_at=expires
        ):
            row = await LeaseRow.get(name=name)
            return int(row.token)
        if await LeaseRow.filter(name=name, expires_at__lt=now).update(
            holder=holder, expires_at=expires, token=F("token") + 1
        ):
            row = await LeaseRow.get(name=name)
            return int(row.token) if row.holder == holder else None
        try:
            await LeaseRow.create(name=name, holder=holder, expires_at=expires, token=1)
        except IntegrityError:
            return None
        return 1

    async def release_lease(self, name: str, holder: str) -> None:
        await LeaseRow.filter(name=name, holder=holder).delete()
