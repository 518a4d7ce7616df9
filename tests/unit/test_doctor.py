"""``snapbot doctor`` against broken set-ups names each problem with its fix, and passes a good
one: real libvirt test-driver hosts, real SQLite catalogues, the fake Slack over HTTP."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import cli
from bot.messages.doctor import doctor_report, finding_line
from core.bootstrap_doctor import BOT_SCOPES, run_doctor
from core.catalogue.db import open_database
from core.config import Secret, Settings, SlackSettings
from core.domain.vm import Vm, VmState
from core.services.doctor import (
    Check,
    Doctor,
    DoctorPorts,
    Finding,
    Problem,
    Rights,
    Schema,
    SchemaState,
    SlackAuth,
    Status,
    StoreFacts,
    failed,
)
from tests.fakes.hypervisor import FakeHypervisor
from tests.fakes.slack import Call, FakeSlack

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "tests" / "contract" / "data" / "node.xml"
UNREACHABLE_URI = "qemu+unix:///system?socket=/nonexistent/snapbot-doctor/libvirt-sock"

GOOD_NODE = """<node>
  <domain type="test">
    <name>app-01</name>
    <uuid>6f1c1d9e-6d2a-4c55-9d1e-0d2b8b6f0a01</uuid>
    <memory>524288</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type="file" device="disk">
        <driver name="qemu" type="qcow2"/>
        <source file="{images}/app-01.qcow2"/>
        <target dev="vda" bus="virtio"/>
      </disk>
    </devices>
  </domain>
</node>
"""


class ScopedSlack(FakeSlack):
    """The fake Slack, answering auth.test with the granted scopes in ``x-oauth-scopes`` as
    Slack does."""

    def __init__(self, scopes: frozenset[str]) -> None:
        super().__init__()
        self.scopes = scopes

    async def _answer(self, call: Call) -> tuple[int, dict[str, Any], dict[str, str]]:
        status, body, headers = await super()._answer(call)
        if call.method == "auth.test" and body.get("ok"):
            headers = {**headers, "x-oauth-scopes": ",".join(sorted(self.scopes))}
        return status, body, headers


def by_check(findings: list[Finding]) -> dict[Check, Finding]:
    return {f.check: f for f in findings}


def settings(uri: str, database: Path, slack: SlackSettings | None = None) -> Settings:
    return Settings(
        libvirt_uri=uri,
        libvirt_uri_explicit=True,
        data_dir=database.parent,
        database_url=f"sqlite://{database}",
        slack=slack,
        timezone="Europe/Paris",
    )


def slack_settings(slack: FakeSlack, *, app_token: str = "xapp-test") -> SlackSettings:
    return SlackSettings(
        bot_token=Secret("xoxb-test"), app_token=Secret(app_token), api_url=slack.api_url
    )


async def migrated(path: Path) -> Path:
    async with open_database(f"sqlite://{path}"):
        pass
    return path


def good_node(tmp_path: Path) -> str:
    images = tmp_path / "images"
    images.mkdir()
    node = tmp_path / "good.xml"
    node.write_text(GOOD_NODE.format(images=images))
    return f"test://{node}"


def test_bot_scopes_are_the_manifests() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert frozenset(manifest["oauth_config"]["scopes"]["bot"]) == BOT_SCOPES


async def test_good_setup_passes(tmp_path: Path) -> None:
    db = await migrated(tmp_path / "catalogue.sqlite3")
    async with ScopedSlack(BOT_SCOPES | {"channels:read"}) as slack:
        findings = await run_doctor(settings(good_node(tmp_path), db, slack_settings(slack)))
    checks = by_check(findings)
    assert not failed(findings), doctor_report(findings)
    for check in (
        Check.LIBVIRT,
        Check.DISKS,
        Check.DATABASE,
        Check.SLACK_TOKEN,
        Check.SLACK_SCOPES,
        Check.SLACK_TRANSPORT,
        Check.TIMEZONE,
    ):
        assert checks[check].status is Status.OK, finding_line(checks[check])
    assert "read-write" in finding_line(checks[Check.LIBVIRT])
    assert "Socket Mode" in finding_line(checks[Check.SLACK_TRANSPORT])
    if shutil.disk_usage(tmp_path).free >= 2 * 1024**3:
        assert checks[Check.SPACE].status is Status.OK, finding_line(checks[Check.SPACE])


async def test_broken_setup_names_each_problem_with_its_fix(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    shutil.copy(NODE, node)
    db = await migrated(tmp_path / "catalogue.sqlite3")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO tortoise_migrations (app, name, applied_at) VALUES "
            "('snapbot', '9999_from_a_newer_snapbot', '2030-01-01T00:00:00+00:00')"
        )
    async with ScopedSlack(BOT_SCOPES - {"usergroups:read"}) as slack:
        findings = await run_doctor(settings(f"test://{node}", db, slack_settings(slack)))
    checks = by_check(findings)
    report = doctor_report(findings)
    assert failed(findings)

    disks = finding_line(checks[Check.DISKS])
    assert disks.startswith("FAIL")
    assert "legacy-raw:vda (raw)" in disks
    assert "qemu-img convert -O qcow2" in disks
    # A read-only CD-ROM in raw is fine: nothing is written to it.
    assert "web-01" not in disks

    database = finding_line(checks[Check.DATABASE])
    assert database.startswith("FAIL")
    assert "9999_from_a_newer_snapbot" in database
    assert "newer snapbot" in database
    assert "bak-" in database

    scopes = finding_line(checks[Check.SLACK_SCOPES])
    assert scopes.startswith("FAIL")
    assert "usergroups:read" in scopes
    assert "reinstall" in scopes
    assert "1 check(s) failed" not in report
    assert "check(s) failed" in report


async def test_unreachable_libvirt_fails_and_skips_what_it_would_read(tmp_path: Path) -> None:
    db = await migrated(tmp_path / "catalogue.sqlite3")
    findings = await run_doctor(settings(UNREACHABLE_URI, db))
    checks = by_check(findings)
    libvirt = finding_line(checks[Check.LIBVIRT])
    assert libvirt.startswith("FAIL")
    assert UNREACHABLE_URI in libvirt
    assert "systemctl enable --now libvirtd" in libvirt
    assert checks[Check.DISKS].status is Status.WARN
    assert "libvirt is unreachable" in finding_line(checks[Check.DISKS])
    # The other checks still ran.
    assert checks[Check.DATABASE].status is Status.OK
    assert checks[Check.SLACK_TOKEN].problem is Problem.SLACK_NOT_CONFIGURED


async def test_database_that_needs_an_upgrade_warns_and_changes_nothing(tmp_path: Path) -> None:
    db = await migrated(tmp_path / "catalogue.sqlite3")
    with sqlite3.connect(db) as conn:
        (newest,) = conn.execute(
            "SELECT name FROM tortoise_migrations ORDER BY applied_at DESC, name DESC LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM tortoise_migrations WHERE name = ?", (newest,))
    findings = await run_doctor(settings(good_node(tmp_path), db))
    line = finding_line(by_check(findings)[Check.DATABASE])
    assert line.startswith("WARN")
    assert newest in line
    assert "applies them when it starts" in line
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM tortoise_migrations")}
    assert newest not in names


async def test_unreachable_database_fails(tmp_path: Path) -> None:
    s = settings(good_node(tmp_path), tmp_path / "x.sqlite3")
    broken = Settings(**{**_fields(s), "database_url": "postgres://snapbot:hunter2@127.0.0.1:1/db"})
    findings = await run_doctor(broken)
    line = finding_line(by_check(findings)[Check.DATABASE])
    assert line.startswith("FAIL")
    assert "check DATABASE_URL" in line
    assert "hunter2" not in line
    assert "snapbot:***@127.0.0.1:1" in line


async def test_missing_sqlite_file_is_new_not_created(tmp_path: Path) -> None:
    db = tmp_path / "fresh.sqlite3"
    findings = await run_doctor(settings(good_node(tmp_path), db))
    finding = by_check(findings)[Check.DATABASE]
    assert finding.status is Status.OK
    assert finding.problem is Problem.DATABASE_NEW
    assert not db.exists()


async def test_refused_bot_token_and_socket_mode(tmp_path: Path) -> None:
    db = await migrated(tmp_path / "catalogue.sqlite3")
    async with ScopedSlack(BOT_SCOPES) as slack:
        slack.fail("auth.test", "invalid_auth")
        slack.fail("apps.connections.open", "invalid_auth")
        findings = await run_doctor(settings(good_node(tmp_path), db, slack_settings(slack)))
    checks = by_check(findings)
    token = finding_line(checks[Check.SLACK_TOKEN])
    assert token.startswith("FAIL")
    assert "invalid_auth" in token
    assert "OAuth & Permissions" in token
    transport = finding_line(checks[Check.SLACK_TRANSPORT])
    assert transport.startswith("FAIL")
    assert "connections:write" in transport


async def test_slack_that_does_not_answer_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    db = await migrated(tmp_path / "catalogue.sqlite3")
    async with ScopedSlack(BOT_SCOPES) as slack:
        gone = slack_settings(slack)
    findings = await run_doctor(settings(good_node(tmp_path), db, gone))
    line = finding_line(by_check(findings)[Check.SLACK_TOKEN])
    assert line.startswith("FAIL")
    assert "cannot reach Slack" in line


# --- the service over fake ports: what the real adapters cannot be made to do here ----------


class Ports:
    def __init__(self, rights: Rights = Rights.READ_WRITE, store: StoreFacts | None = None) -> None:
        self._rights = rights
        self._store = store or StoreFacts(True, 500 * 2**30, 1, ())
        # the filesystem of every VM disk
        self.disk_device = 2

    async def facts(self, directory: Path) -> StoreFacts:
        return self._store

    async def device_of(self, path: str) -> int | None:
        return self.disk_device

    async def rights(self, uri: str) -> Rights:
        return self._rights

    async def schema(self, database_url: str) -> Schema:
        return Schema(SchemaState.UP_TO_DATE)

    async def auth_test(self, token: str) -> SlackAuth:
        return SlackAuth(error=None, team="T", scopes=None)

    async def open_socket(self, app_token: str) -> str | None:
        return None


def _fields(s: Settings) -> dict[str, Any]:
    return {name: getattr(s, name) for name in s.__dataclass_fields__}


def doctor(s: Settings, ports: Ports, public_url: str | None = None) -> Doctor:
    from core.catalogue.store import SystemClock

    return Doctor(
        s,
        FakeHypervisor(),
        DoctorPorts(libvirt=ports, schema=ports, slack=ports, clock=SystemClock(), backup=ports),
        required_scopes=BOT_SCOPES,
        public_url=public_url,
    )


async def test_read_only_libvirt_fails_naming_the_rights(tmp_path: Path) -> None:
    s = settings("qemu:///system", tmp_path / "db.sqlite3")
    findings = await doctor(s, Ports(Rights.READ_ONLY)).run()
    line = finding_line(by_check(findings)[Check.LIBVIRT])
    assert line.startswith("FAIL")
    assert "read-only" in line
    assert "libvirt group" in line


@pytest.mark.parametrize(
    ("public_url", "status"),
    [
        (None, Status.WARN),
        ("http://bot.example.com/slack/events", Status.FAIL),
        ("https://bot.example.com/", Status.FAIL),
        ("https://bot.example.com/slack/events", Status.OK),
    ],
)
async def test_http_mode_public_url(tmp_path: Path, public_url: str | None, status: Status) -> None:
    http = SlackSettings(bot_token=Secret("xoxb-test"), signing_secret=Secret("s"))
    s = settings("qemu:///system", tmp_path / "db.sqlite3", http)
    findings = await doctor(s, Ports(), public_url).run()
    checks = by_check(findings)
    assert checks[Check.SLACK_TRANSPORT].status is status, finding_line(
        checks[Check.SLACK_TRANSPORT]
    )
    # Slack gave no scope list: the operator is told where to compare them.
    assert checks[Check.SLACK_SCOPES].problem is Problem.SLACK_SCOPES_UNKNOWN


async def test_invalid_time_zone_fails(tmp_path: Path) -> None:
    s = Settings(**{**_fields(settings("qemu:///system", tmp_path / "d")), "timezone": "Mars/Base"})
    line = finding_line(by_check(await doctor(s, Ports()).run())[Check.TIMEZONE])
    assert line.startswith("FAIL")
    assert "Mars/Base" in line
    assert "SNAPBOT_TIMEZONE" in line


def test_cli_exit_status_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SNAPBOT_CONFIG", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite://{tmp_path / 'c.sqlite3'}")
    monkeypatch.setenv("LIBVIRT_URI", UNREACHABLE_URI)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("FAIL  libvirt:")
    assert "check(s) failed" in out

    monkeypatch.setenv("LIBVIRT_URI", good_node(tmp_path))
    assert cli.main(["doctor"]) == 0
    assert "FAIL" not in capsys.readouterr().out


async def test_release_0_1_catalogue_needs_an_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "release.sqlite3"
    schema = ROOT / "tests" / "contract" / "data" / "release_0_1_schema.sqlite.sql"
    with sqlite3.connect(db) as conn:
        conn.executescript(schema.read_text())
    findings = await run_doctor(settings(good_node(tmp_path), db))
    line = finding_line(by_check(findings)[Check.DATABASE])
    assert line.startswith("WARN")
    assert "0001_release_0_1" in line


# --- the backup store ---------------------------------------------------------------------


def with_store(s: Settings, directory: Path) -> Settings:
    return Settings(**{**_fields(s), "backup_dir": directory})


async def test_without_a_backup_store_doctor_says_what_is_off_and_how_to_turn_it_on(
    tmp_path: Path,
) -> None:
    s = settings("qemu:///system", tmp_path / "db.sqlite3")
    line = finding_line(by_check(await doctor(s, Ports()).run())[Check.BACKUP_STORE])
    assert line.startswith("WARN")
    assert "SNAPBOT_BACKUP_DIR" in line


@pytest.mark.parametrize(
    ("store", "disk_device", "status", "words"),
    [
        (StoreFacts(True, 500 * 2**30, 1, ()), 2, Status.OK, "writable, 500.0 GiB free"),
        (StoreFacts(True, 500 * 2**30, 1, ()), 1, Status.WARN, "same filesystem"),
        (StoreFacts(False, 500 * 2**30, 1, ()), 2, Status.FAIL, "cannot be written"),
        (StoreFacts(True, 2**30, 1, ()), 2, Status.WARN, "only 1.0 GiB free"),
        (StoreFacts(True, 500 * 2**30, 1, ("qemu-nbd",)), 2, Status.FAIL, "need qemu-nbd"),
    ],
)
async def test_the_backup_store_check(
    tmp_path: Path, store: StoreFacts, disk_device: int, status: Status, words: str
) -> None:
    s = with_store(settings("qemu:///system", tmp_path / "db.sqlite3"), tmp_path)
    ports = Ports(store=store)
    ports.disk_device = disk_device
    hv = FakeHypervisor(Vm("11111111-1111-1111-1111-111111111111", "web-01", VmState.RUNNING, 1))
    from core.catalogue.store import SystemClock

    found = await Doctor(
        s,
        hv,
        DoctorPorts(libvirt=ports, schema=ports, slack=ports, clock=SystemClock(), backup=ports),
        required_scopes=BOT_SCOPES,
        public_url=None,
    ).run()
    finding = by_check(found)[Check.BACKUP_STORE]
    assert finding.status is status
    assert words in finding_line(finding)


async def test_the_real_probe_reads_the_directory(tmp_path: Path) -> None:
    from core.adapters.backupstore.probe import DirectoryStoreProbe

    facts = await DirectoryStoreProbe().facts(tmp_path)
    assert facts.writable
    assert facts.missing_tools == ()  # make test installs qemu-utils and python3-libnbd
    assert facts.device == (await asyncio.to_thread(tmp_path.stat)).st_dev
    left = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert left == []  # its test file is gone
