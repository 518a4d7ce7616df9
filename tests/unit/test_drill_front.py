"""Restore drills outside the services: the grammar of ``/snapshot drill`` and ``--drill``
schedules, the ``[drills]`` configuration, the throwaway VM's XML (isolated from the original),
the screenshot's conversion to PNG, the wording of reports, and the console."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import messages
from bot.console import Console
from bot.grammar import SNAPSHOT, AddSchedule, RunDrill, UsageError, parse_line
from bot.messages.drills import age_text, drill_status_line
from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.libvirt.domain_copy import DRILL_METADATA_TAG, drill_domain
from core.adapters.libvirt.drill import ppm_to_png
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock
from core.config import Settings
from core.domain.drills import (
    DEFAULT_READY_TIMEOUT,
    Drill,
    DrillPolicies,
    DrillPolicy,
    DrillResult,
    DrillSource,
    ReadyKind,
    ReadySignal,
    choose_signal,
    overdue,
    parse_drill_policies,
    throwaway_name,
)
from core.errors import InvalidInput
from core.services.drills import DrillOutcome, DrillStatus
from tests.conftest import ALICE, Services
from tests.fakes.disks import FakeDiskAccess
from tests.fakes.drills import FakeDrillLab

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# -- grammar -------------------------------------------------------------------------------------


def test_snapshot_drill_takes_a_vm_and_optionally_a_point() -> None:
    assert parse_line("/snapshot drill web-01") == RunDrill("web-01", None)
    assert parse_line("/snapshot drill web-01 night-1") == RunDrill("web-01", "night-1")
    for wrong in ("/snapshot drill", "/snapshot drill a b c", "/snapshot drill web-01 --hold"):
        with pytest.raises(UsageError):
            parse_line(wrong)
    assert "/snapshot drill <vm> [<name>]" in messages.help_text(SNAPSHOT)


def test_a_drill_schedule_is_added_with_drill_and_nothing_else() -> None:
    parsed = parse_line("/snapshot schedule add monthly-drills all daily 03:00 --drill")
    assert isinstance(parsed, AddSchedule)
    assert parsed.drill
    for extra in ("--incremental", "--verify", "--archive", "--keep-last 3"):
        with pytest.raises(UsageError, match="only drills"):
            parse_line(f"/snapshot schedule add d all daily 03:00 --drill {extra}")


# -- configuration -------------------------------------------------------------------------------


def test_drill_policies_from_the_configuration_first_match_wins() -> None:
    policies = parse_drill_policies(
        {
            "db-*": {"ready": "command:pg_isready", "timeout": 600, "owner": "U0DBA"},
            "*": {"ready": "console:login:"},
        }
    )
    db = policies.for_vm("db-01")
    assert db.ready == ReadySignal(ReadyKind.COMMAND, "pg_isready")
    assert db.timeout == 600
    assert db.owner == "U0DBA"
    web = policies.for_vm("web-01")
    assert web.ready == ReadySignal(ReadyKind.CONSOLE, "login:")
    assert web.timeout == DEFAULT_READY_TIMEOUT
    assert DrillPolicies().for_vm("x").ready is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"*": {"ready": "ping"}}, "is not a readiness signal"),
        ({"*": {"ready": "console:("}}, "is not a regex"),
        ({"*": {"timeout": 0}}, "timeout must be a number of seconds above 0"),
        ({"*": {"wait": 3}}, "takes ready, timeout, owner"),
        ({"*": "agent"}, "must be a table"),
    ],
)
def test_bad_drill_configuration_is_refused_by_name(table: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_drill_policies(table)


def test_settings_read_drills_from_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "snapbot.toml"
    config.write_text('[drills."web-*"]\nready = "agent"\ntimeout = 120\nowner = "U0WEB"\n')
    settings = Settings.load({"SNAPBOT_CONFIG": str(config), "HOME": str(tmp_path)})
    policy = settings.drills.for_vm("web-01")
    assert policy.ready == ReadySignal(ReadyKind.AGENT)
    assert policy.owner == "U0WEB"


def test_the_signal_is_the_agent_by_default_and_a_console_regex_without_one() -> None:
    default = DrillPolicy("*")
    assert choose_signal(default, has_agent=True, vm_name="a").kind is ReadyKind.AGENT
    with pytest.raises(InvalidInput, match="console:<regex>"):
        choose_signal(default, has_agent=False, vm_name="a")
    command = DrillPolicy("*", ready=ReadySignal(ReadyKind.COMMAND, "true"))
    with pytest.raises(InvalidInput, match="no guest agent channel"):
        choose_signal(command, has_agent=False, vm_name="a")


# -- the throwaway VM's configuration ----------------------------------------------------------

ORIGINAL = """<domain type='kvm'>
  <name>web-01</name>
  <uuid>11111111-1111-1111-1111-111111111111</uuid>
  <memory unit='MiB'>512</memory>
  <os><type>hvm</type><nvram template='/usr/share/OVMF/VARS.fd'>/var/lib/libvirt/qemu/nvram/web-01_VARS.fd</nvram></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/web-01.img'/><target dev='vda'/></disk>
    <disk type='file' device='cdrom'><source file='/srv/iso/install.iso'/><target dev='sda'/><readonly/></disk>
    <disk type='file' device='disk'><source file='/srv/shared.img'/><target dev='vdb'/><shareable/></disk>
    <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/></interface>
    <hostdev mode='subsystem' type='pci'/>
    <filesystem type='mount'><source dir='/srv/data'/><target dir='data'/></filesystem>
    <serial type='pty'><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='/run/web-01.sock'/><target port='1'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/web-01.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='5901' autoport='no' listen='0.0.0.0'><listen type='address' address='0.0.0.0'/></graphics>
    <graphics type='sdl'/>
    <tpm model='tpm-crb'><backend type='emulator'/></tpm>
  </devices>
</domain>"""


def test_the_throwaway_vm_is_cut_off_from_everything_the_original_uses() -> None:
    made = drill_domain(
        ORIGINAL,
        ["vda"],
        name="snapbot-drill-web-01-1a2b3c4d",
        uuid="99999999-9999-9999-9999-999999999999",
        directory="/var/tmp/snapbot-drill-x",
        started_at=T0.isoformat(),
        owner="host:1",
    )
    root = ET.fromstring(made.xml)
    assert root.findtext("name") == "snapbot-drill-web-01-1a2b3c4d"
    assert root.findtext("uuid") == "99999999-9999-9999-9999-999999999999"
    devices = root.find("devices")
    assert devices is not None
    for gone in ("interface", "hostdev", "filesystem", "tpm"):
        assert devices.find(gone) is None, gone
    sources = [d.find("source").get("file") for d in devices.iterfind("disk")]  # type: ignore[union-attr]
    # Its own new disk; the installer ISO read-only; the shared writable disk left out.
    assert sources == ["/var/tmp/snapbot-drill-x/vda.qcow2", "/srv/iso/install.iso"]
    assert made.disk_paths == {"vda": "/var/tmp/snapbot-drill-x/vda.qcow2"}
    assert root.findtext("os/nvram") == "/var/tmp/snapbot-drill-x/VARS.fd"
    serials = devices.findall("serial")
    assert serials[0].get("type") == "file"
    assert serials[0].find("source").get("path") == made.console_log  # type: ignore[union-attr]
    assert serials[1].get("type") == "null"
    assert "/run/web-01.sock" not in made.xml
    assert "web-01.agent" not in made.xml, "the agent socket is the copy's own"
    (graphics,) = devices.findall("graphics")
    assert graphics.get("type") == "vnc"
    assert [listen.get("type") for listen in graphics.findall("listen")] == ["none"]
    assert "5901" not in made.xml
    assert made.has_display
    assert root.findtext("on_crash") == "destroy"
    mark = root.find(f"metadata/{DRILL_METADATA_TAG}")
    assert mark is not None
    assert mark.get("directory") == "/var/tmp/snapbot-drill-x"
    assert "52:54:00:aa:bb:cc" not in made.xml


def test_a_throwaway_name_is_marked_and_fits_a_file_name() -> None:
    name = throwaway_name("web 01/ü", "1a2b3c4d5e6f7a8b")
    assert name.startswith("snapbot-drill-web-01-")
    assert name.endswith("-1a2b3c4d")
    assert "/" not in name


# -- the screenshot ------------------------------------------------------------------------------


def test_a_ppm_screendump_becomes_a_png_with_the_same_pixels() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    png = ppm_to_png(b"P6\n# QEMU\n2 2\n255\n" + pixels)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (2, 2)
    idat_at = png.index(b"IDAT")
    length = struct.unpack(">I", png[idat_at - 4 : idat_at])[0]
    raw = zlib.decompress(png[idat_at + 4 : idat_at + 4 + length])
    assert raw == b"\x00" + pixels[:6] + b"\x00" + pixels[6:]
    with pytest.raises(ValueError, match="not a binary PPM"):
        ppm_to_png(b"P3\n1 1\n255\n0 0 0")


# -- wording -------------------------------------------------------------------------------------


def a_drill(result: DrillResult, **changes: object) -> Drill:
    base = Drill(
        id="d1",
        vm_uuid="11111111-1111-1111-1111-111111111111",
        vm_name="web-01",
        label="night-1",
        libvirt_name="pt-x",
        point_id="20260301T020000Z-1a2b3c4d",
        source=DrillSource.STORE,
        point_created_at=T0 - timedelta(days=2, hours=3),
        started_at=T0,
        requested_by="U_ALICE",
        result=result,
        throwaway_name="snapbot-drill-web-01-d1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_ages_read_as_people_say_them() -> None:
    assert age_text(timedelta(days=2, hours=3)) == "2 d 3 h"
    assert age_text(timedelta(hours=5, minutes=12)) == "5 h 12 min"
    assert age_text(timedelta(minutes=40)) == "40 min"


def test_reports_say_pass_or_fail_age_time_and_who_must_look() -> None:
    passed = DrillOutcome(
        a_drill(DrillResult.PASSED, ready_seconds=41.2),
        ReadySignal(ReadyKind.AGENT),
        "U0OWNER",
        memory_not_included=False,
    )
    text = messages.drill_report(passed)
    assert "Drill passed" in text
    assert "*2 d 3 h old*" in text
    assert "Ready *41.2 s*" in text
    assert "<@U0OWNER>" not in text
    failed = DrillOutcome(
        a_drill(DrillResult.FAILED, error="the guest agent does not answer"),
        ReadySignal(ReadyKind.AGENT),
        "U0OWNER",
        memory_not_included=True,
    )
    text = messages.drill_report(failed)
    assert "Drill failed" in text
    assert "<@U0OWNER>, please look" in text
    assert "the guest agent does not answer" in text
    assert "memory state is not part of a drill" in text
    console_owner = DrillOutcome(
        a_drill(DrillResult.FAILED, error="x"), None, "console:root", memory_not_included=False
    )
    assert "<@console:root>" not in messages.drill_report(console_owner)


def test_overdue_vms_are_flagged_and_the_home_line_names_the_last_drill() -> None:
    recent = a_drill(DrillResult.PASSED, ready_seconds=30.0, started_at=T0 - timedelta(days=3))
    old = a_drill(
        DrillResult.PASSED,
        vm_uuid="22222222-2222-2222-2222-222222222222",
        vm_name="web-02",
        started_at=T0 - timedelta(days=40),
        ready_seconds=30.0,
    )
    vms = [
        (recent.vm_uuid, "web-01"),
        (old.vm_uuid, "web-02"),
        ("33333333-3333-3333-3333-333333333333", "db-01"),
    ]
    late = overdue(vms, [recent, old], T0)
    assert [v.vm_name for v in late] == ["web-02", "db-01"]
    statuses = [
        DrillStatus(recent.vm_uuid, "web-01", recent, overdue=False),
        DrillStatus(old.vm_uuid, "web-02", old, overdue=True),
        DrillStatus("3", "db-01", None, overdue=True),
    ]
    text = messages.drills_overdue(statuses, T0)
    assert text is not None
    assert "2 VM(s) without a passing restore drill in 35 days" in text
    assert "web-02: last 40 d 0 h ago" in text
    assert "db-01: never" in text
    assert messages.drills_overdue(statuses[:1], T0) is None
    assert "last passing drill 3 d 0 h ago" in drill_status_line(statuses[0], T0)


# -- the console ---------------------------------------------------------------------------------


@pytest.fixture
def lab() -> Iterator[FakeDrillLab]:
    made = FakeDrillLab()
    made.script.screenshot = ppm_to_png(b"P6\n1 1\n255\n\x00\x00\x00")
    yield made
    made.close()


async def test_the_console_drills_and_writes_the_screenshot_under_the_data_dir(
    services: Services,
    tmp_path: Path,
    backup_store: DirectoryBackupStore,
    fake_disks: FakeDiskAccess,
    lab: FakeDrillLab,
) -> None:
    settings = Settings(
        libvirt_uri="fake:///",
        libvirt_uri_explicit=True,
        data_dir=tmp_path,
        database_url="sqlite://:memory:",
        drills=DrillPolicies((DrillPolicy("*", ready=ReadySignal(ReadyKind.CONSOLE, "x")),)),
    )
    core: Core = wire(
        settings,
        services.hv,
        services.catalogue,
        SystemClock(),
        libvirt_uri="fake:///",
        store=backup_store,
        disks=fake_disks,
        lab=lab,
    )
    assert core.backups is not None
    await core.backups.create_backup("web-01", "night-1", actor=ALICE)
    out = io.StringIO()
    status = await Console(core, io.StringIO("/snapshot drill web-01\n"), out).run()
    text = out.getvalue()
    assert status == 0, text
    assert "Drill passed" in text
    (saved,) = (tmp_path / "drills").iterdir()
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert str(saved) in text
