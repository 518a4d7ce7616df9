"""The object storage's secret key never reaches a log line or a reply: not while copying, not
when the storage refuses (a bucket that does not exist, a wrong key), with every logger
(boto3's and botocore's included) at DEBUG, as the session's leak scan runs them."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from bot.messages import error_text, offsite_status
from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.offsite import Bucket, S3OffsiteStore
from core.catalogue.store import SystemClock
from core.domain.offsite import OffsiteUnavailable
from core.services.offsite import OffsiteService
from tests.fakes.s3 import new_bucket, s3_endpoint
from tests.security.leakscan import LeakScanner
from tests.security.test_secret_leaks import scanning

__all__ = ["s3_endpoint"]


async def test_the_secret_key_is_in_no_log_line_and_no_reply(
    backup_store: DirectoryBackupStore, s3_endpoint: str
) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    scanner = LeakScanner((secret,))
    replies: list[str] = []
    with scanning(scanner):
        good = S3OffsiteStore(
            Bucket(s3_endpoint, new_bucket(s3_endpoint)),
            backup_store.root,
            delete_after=timedelta(1),
        )
        service = OffsiteService(good, SystemClock())
        await service.copy_new()
        await service.verify()
        replies.append(offsite_status(await service.view()))
        missing = S3OffsiteStore(
            Bucket(s3_endpoint, "no-such-bucket"), backup_store.root, delete_after=timedelta(1)
        )
        with pytest.raises(OffsiteUnavailable) as refused:
            await missing.copy_new()
        replies.append(error_text(refused.value))
        failing = OffsiteService(missing, SystemClock())
        await failing.run_once()  # a background copy that fails: logged, kept for the status
        good.close()
        missing.close()
    assert scanner.scanned > 0
    assert not [leak for leak in scanner.leaks if secret in leak.found]
    assert not [reply for reply in replies if secret in reply]
