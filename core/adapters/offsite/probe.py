"""What ``snapbot doctor`` needs to know about the offsite copy's bucket: does it answer, and
does it take a write (one small object, removed at once)."""

from __future__ import annotations

import asyncio
import secrets

from core.adapters.offsite.bucket import Bucket
from core.domain.offsite import OffsiteUnavailable


def _problem(url: str, bucket: str, region: str) -> str | None:
    client = Bucket(url, bucket, region=region, connections=1)
    key = f".snapbot-doctor-{secrets.token_hex(4)}"
    try:
        client.check()
        client.put(key, b"")
        client.delete(key)
    except OffsiteUnavailable as error:
        return error.detail
    finally:
        client.close()
    return None


class BucketProbe:
    async def problem(self, url: str, bucket: str, region: str) -> str | None:
        return await asyncio.to_thread(_problem, url, bucket, region)
