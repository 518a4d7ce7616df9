"""``/snapshot offsite [status|copy|verify]`` from the console, as an operator types it,
against a real S3-compatible server (moto's): what is pending, a copy, a verification that
finds a damaged piece, and the answer where no offsite copy is configured."""

from __future__ import annotations

import dataclasses
import io
import os
from datetime import timedelta

import pytest

from bot.console import Console
from bot.grammar import Offsite, UsageError
from bot.grammar import parse_line as parse
from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.offsite import Bucket, S3OffsiteStore
from core.bootstrap import Core
from core.catalogue.store import SystemClock
from core.services.offsite import OffsiteService
from tests.conftest import ALICE
from tests.fakes.disks import FakeDiskAccess
from tests.fakes.s3 import new_bucket, object_keys, put_object, s3_endpoint

__all__ = ["s3_endpoint"]

WEB = "11111111-1111-1111-1111-111111111111"
MIB = 1024 * 1024


async def run(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    status = await Console(core, io.StringIO(script), out).run()
    return status, out.getvalue()


def test_the_grammar_reads_the_three_forms_and_refuses_others() -> None:
    assert parse("/snapshot offsite") == Offsite("status")
    assert parse("/snapshot offsite copy") == Offsite("copy")
    assert parse("/snapshot offsite verify") == Offsite("verify")
    assert parse("/snapshot offsite undelete web-01 nightly") == Offsite(
        "undelete", "web-01", "nightly"
    )
    with pytest.raises(UsageError, match="status, copy, verify or undelete"):
        parse("/snapshot offsite delete")
    with pytest.raises(UsageError, match="status, copy, verify or undelete"):
        parse("/snapshot offsite copy now")
    with pytest.raises(UsageError, match="missing the VM and the deleted snapshot's name"):
        parse("/snapshot offsite undelete web-01")


async def test_status_copy_and_verify_from_the_console(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    store = S3OffsiteStore(
        Bucket(s3_endpoint, new_bucket(s3_endpoint)),
        backup_store.root,
        delete_after=timedelta(days=14),
    )
    with_offsite = dataclasses.replace(core, offsite=OffsiteService(store, SystemClock()))
    fake_disks.write(WEB, 0, os.urandom(6 * MIB))
    status, out = await run(with_offsite, "/snapshot web-01 first --incremental\n")
    assert status == 0, out

    status, out = await run(with_offsite, "/snapshot offsite\n")
    assert status == 0, out
    assert "1 of 1 local restore point(s) not copied yet" in out
    assert "stays offsite for 14 day(s)" in out

    status, out = await run(with_offsite, "/snapshot offsite copy\n")
    assert "1 new restore point(s), 2 piece(s)" in out, out
    status, out = await run(with_offsite, "/snapshot offsite status\n")
    assert "All 1 local restore point(s) are copied" in out, out

    chunk = next(k for k in object_keys(s3_endpoint, store.bucket.name) if k.startswith("chunks/"))
    put_object(s3_endpoint, store.bucket.name, chunk, b"rotten")
    status, out = await run(with_offsite, "/snapshot offsite verify\n")
    assert "1 damaged and 0 missing piece(s); 1 restore point(s) affected" in out, out
    status, out = await run(with_offsite, "/snapshot offsite copy\n")
    assert "0 new restore point(s), 1 piece(s)" in out, out
    status, out = await run(with_offsite, "/snapshot offsite verify\n")
    assert "Everything is intact" in out, out
    store.close()


async def test_without_an_offsite_copy_the_reply_says_how_to_configure_one(core: Core) -> None:
    _status, out = await run(core, "/snapshot offsite\n")
    assert "SNAPBOT_OFFSITE_URL" in out, out
    assert "SNAPBOT_OFFSITE_BUCKET" in out


async def test_a_mistaken_delete_is_undone_from_the_offsite_copy(
    core: Core, backup_store: DirectoryBackupStore, fake_disks: FakeDiskAccess, s3_endpoint: str
) -> None:
    store = S3OffsiteStore(
        Bucket(s3_endpoint, new_bucket(s3_endpoint)),
        backup_store.root,
        delete_after=timedelta(days=14),
    )
    service = OffsiteService(store, SystemClock())
    with_offsite = dataclasses.replace(core, offsite=service)
    data = os.urandom(6 * MIB)
    fake_disks.write(WEB, 0, data)
    await run(with_offsite, "/snapshot web-01 keep --incremental\n")
    fake_disks.write(WEB, 0, os.urandom(MIB))
    await run(with_offsite, "/snapshot web-01 oops --incremental\n")
    await service.run_once()
    await core.snapshots.delete_snapshot("web-01", "keep", actor=ALICE)
    assert [m.label for m in await backup_store.list_points(WEB)] == ["oops"]
    await service.run_once()  # the next pass marks it offsite

    status, out = await run(with_offsite, "/snapshot offsite\n")
    assert "/snapshot offsite undelete <vm> <name> brings one back" in out, out
    assert "web-01 `keep`: deleted offsite" in out

    status, out = await run(with_offsite, "/snapshot offsite undelete web-01 keep\n")
    assert status == 0, out
    assert "Restore point `keep` of web-01 is back in the backup store" in out, out
    assert sorted(m.label for m in await backup_store.list_points(WEB)) == ["keep", "oops"]
    assert (await service.view()).status.marked == ()
    status, out = await run(with_offsite, "/snapshot list web-01\n")
    assert "keep " in out, out
    fake_disks.write(WEB, 0, bytes(MIB))
    status, out = await run(with_offsite, "/restore web-01 keep\nweb-01\n")
    assert status == 0, out
    assert fake_disks.read(WEB, 0, 6 * MIB) == data

    status, out = await run(with_offsite, "/snapshot offsite undelete web-01 never\n")
    assert "keeps no deleted restore point 'never' of web-01" in out, out
    store.close()
