"""``/snapshot usage`` in the console: the report as text, the chart written to a file under
the data directory (a terminal cannot show it), and the weekly report through the reporter."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

from bot.console import Console, ConsoleReporter, safe_file_part
from core.bootstrap import Core
from tests.conftest import ALICE, Services

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def run(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    status = await Console(core, io.StringIO(script), out).run()
    return status, out.getvalue()


def assert_png(data: bytes) -> None:
    assert data[:8] == PNG_MAGIC
    (length,) = struct.unpack(">I", data[8:12])
    header = data[12 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert header[:4] == b"IHDR"
    assert zlib.crc32(header) == crc
    assert data.endswith(b"IEND\xaeB`\x82")


async def test_usage_prints_the_report_and_writes_the_chart(
    core: Core, services: Services, tmp_path: Path
) -> None:
    await services.service.create_snapshot("web-01", "before", actor=ALICE)
    status, out = await run(core, "/snapshot usage\n/snapshot usage web-01\n")
    assert status == 0, out
    assert "Storage usage of host" in out
    assert "*web-01*: disk images" in out
    assert "memory states 128.0 MiB (1 full snapshot(s))" in out
    assert "Backup store" in out
    assert "/var/lib/fake (vm disks): 100.0 GiB free" in out
    assert "not enough history for a forecast yet" in out
    assert "Storage usage of web-01" in out
    paths = [
        Path(line.rsplit(": ", 1)[1])
        for line in out.splitlines()
        if "Chart of the last 90 days:" in line
    ]
    assert len(paths) == 2
    for path in paths:
        assert path.parent == tmp_path / "charts"
        assert_png(path.read_bytes())
    assert "usage-web-01-" in paths[1].name
    assert not list((tmp_path / "charts").glob("*.partial"))


async def test_usage_of_an_unknown_vm_suggests_one(core: Core) -> None:
    status, out = await run(core, "/snapshot usage web-1\n")
    assert status == 1
    assert "web-01" in out
    assert not (Path(core.settings.data_dir) / "charts").exists()


async def test_weekly_report_in_the_console_writes_its_chart(core: Core, tmp_path: Path) -> None:
    assert core.usage is not None
    out = io.StringIO()
    reporter = ConsoleReporter(out, tmp_path / "charts")
    report = await core.usage.report(None)
    await reporter.usage_report("stdout", report, await core.usage.chart(None))
    text = out.getvalue()
    assert "snapbot weekly storage report" in text
    (written,) = (tmp_path / "charts").glob("usage-weekly-*.png")
    assert f"Chart of the last 90 days written to {written}" in text
    assert_png(written.read_bytes())
    assert report.taken_at <= datetime.now(UTC)


def test_vm_names_become_safe_file_names() -> None:
    assert safe_file_part("web-01") == "web-01"
    assert safe_file_part("../etc/passwd") == "_etc_passwd"
    assert safe_file_part("a b/c") == "a_b_c"
    assert safe_file_part("...") == "vm"
