"""packaging/: the systemd unit is one systemd accepts and runs snapbot as documented; the
example configuration loads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.slack.runner import DRAIN_SECONDS
from core.config import Settings

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNIT = PACKAGING / "snapbot.service"
INSTALLED_BINARY = "/opt/snapbot/bin/snapbot"


def unit_keys(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values, as systemd reads them (a key may repeat; comments skipped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60, "ms": 0.001}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_unit_runs_snapbot_as_a_restartable_service() -> None:
    service = unit_keys(UNIT.read_text())["Service"]
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} run"]
    assert service["User"] == ["snapbot"]
    assert service["Restart"] == ["on-failure"]
    assert "SNAPBOT_CONFIG=/etc/snapbot/snapbot.toml" in service["Environment"]
    assert service["EnvironmentFile"] == ["/etc/snapbot/snapbot.env"]
    assert service["KillSignal"] == ["SIGTERM"]
    # systemd must not SIGKILL snapbot while it still drains running operations.
    assert seconds(service["TimeoutStopSec"][0]) > DRAIN_SECONDS
    # Hardened, yet able to write its data dir and reach libvirt's unix socket.
    assert service["ProtectSystem"] == ["strict"]
    assert service["StateDirectory"] == ["snapbot"]
    assert "AF_UNIX" in service["RestrictAddressFamilies"][0].split()
    assert service["SupplementaryGroups"] == ["libvirt"]


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def verifiable(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's snapbot (verify checks it exists)."""
    # `make test` installs both (systemd is in TEST_PACKAGES, snapbot in the venv): a missing
    # one is a broken test set-up, not a reason to check less.
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: run `make test-deps`"
    binary = Path(sys.executable).with_name("snapbot")
    assert binary.exists(), f"{binary} is missing: run `pip install -e .` (make does)"
    unit = tmp_path / "snapbot.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    return unit


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(verifiable: Path) -> None:
    result = _verify(verifiable)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_systemd_analyze_verify_would_report_a_broken_key(verifiable: Path) -> None:
    # The check above can fail: systemd names a misspelt value.
    verifiable.write_text(
        verifiable.read_text().replace("Restart=on-failure", "Restart=on-fialure")
    )
    assert "on-fialure" in _verify(verifiable).stderr


def test_example_config_file_loads() -> None:
    settings = Settings.load({"SNAPBOT_CONFIG": str(PACKAGING / "snapbot.toml")})
    assert settings.libvirt_uri == "qemu:///system"
    assert settings.data_dir == Path("/var/lib/snapbot")
    assert settings.database_url == "sqlite:///var/lib/snapbot/snapbot.db"


def test_example_environment_file_names_only_known_variables() -> None:
    names = {
        line.lstrip("#").split("=", 1)[0]
        for line in (PACKAGING / "snapbot.env").read_text().splitlines()
        if "=" in line and not line.startswith("# ")
    }
    assert names == {
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SNAPBOT_PUBLIC_URL",
        "DATABASE_URL",
    }
