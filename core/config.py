"""Settings, read once at start-up from the environment and an optional TOML file."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

DEFAULT_LIBVIRT_URI = "qemu:///system"
FALLBACK_LIBVIRT_URI = "test:///default"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/snapbot``, else ``~/.local/share/snapbot``."""
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", "~")) / ".local/share")
    return Path(base).expanduser() / "snapbot"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. Build it with ``Settings.load`` or directly in tests."""

    libvirt_uri: str
    libvirt_uri_explicit: bool
    data_dir: Path
    database_url: str
    libvirt_workers: int = 4
    safety_snapshot: bool = True

    @classmethod
    def load(cls, environ: Mapping[str, str]) -> Settings:
        """Environment first, then the TOML file named by ``SNAPBOT_CONFIG`` (keys in lower
        case: ``libvirt_uri``, ``database_url``, ``data_dir``, ``libvirt_workers``,
        ``safety_snapshot``), then defaults."""
        file: dict[str, object] = {}
        config_path = environ.get("SNAPBOT_CONFIG")
        if config_path:
            try:
                file = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidInput(f"cannot read SNAPBOT_CONFIG={config_path}: {exc}") from exc

        def get(env: str, key: str) -> str | None:
            value = environ.get(env)
            if value:
                return value
            raw = file.get(key)
            return None if raw is None else str(raw)

        uri = get("LIBVIRT_URI", "libvirt_uri")
        data_dir = Path(get("SNAPBOT_DATA_DIR", "data_dir") or default_data_dir(environ))
        database_url = get("DATABASE_URL", "database_url") or f"sqlite://{data_dir / 'snapbot.db'}"
        workers_text = get("SNAPBOT_LIBVIRT_WORKERS", "libvirt_workers") or "4"
        if not workers_text.isdigit() or int(workers_text) < 1:
            raise InvalidInput(
                "SNAPBOT_LIBVIRT_WORKERS must be a whole number of at least 1, "
                f"not {workers_text!r}"
            )
        safety_text = (get("SNAPBOT_SAFETY_SNAPSHOT", "safety_snapshot") or "true").lower()
        if safety_text not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidInput(
                f"SNAPBOT_SAFETY_SNAPSHOT must be true or false, not {safety_text!r}"
            )
        return cls(
            libvirt_uri=uri or DEFAULT_LIBVIRT_URI,
            libvirt_uri_explicit=uri is not None,
            data_dir=data_dir,
            database_url=database_url,
            libvirt_workers=int(workers_text),
            safety_snapshot=safety_text in ("true", "1", "yes"),
        )


def load_settings() -> Settings:
    """Settings from this process's environment."""
    return Settings.load(os.environ)
