"""The offsite copy of the backup store in S3-compatible object storage: ``bucket`` (the only
module importing boto3), ``mirror`` (copy, verify, delayed deletion, status; blocking) and
``store`` (the async ports on top, in a bounded thread pool)."""

from __future__ import annotations

from core.adapters.offsite.bucket import Bucket
from core.adapters.offsite.store import S3OffsiteStore

__all__ = ["Bucket", "S3OffsiteStore"]
