"""Settings, read once at start-up from the environment and an optional TOML file."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.domain.access import AccessPolicy, parse_grants
from core.domain.drills import DrillPolicies, parse_drill_policies
from core.domain.hosts import HostConfig, host_name_from_uri, parse_hosts
from core.domain.offsite import DEFAULT_DELETE_AFTER_DAYS
from core.domain.retention import DEFAULT_SAFETY_KEEP_DAYS, DEFAULT_SAFETY_KEEP_LAST
from core.errors import InvalidInput

DEFAULT_LIBVIRT_URI = "qemu:///system"
FALLBACK_LIBVIRT_URI = "test:///default"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/snapbot``, else ``~/.local/share/snapbot``."""
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", "~")) / ".local/share")
    return Path(base).expanduser() / "snapbot"


class Secret:
    """A token that must never reach a log or a traceback: its repr hides it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# The canonical command names; a workspace may rename them (generic names clash between apps).
DEFAULT_COMMANDS = {"snapshot": "/snapshot", "restore": "/restore", "prune": "/prune"}


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """How to reach Slack. Socket Mode when ``app_token`` is set, HTTP when ``signing_secret``
    is (both may be set: both transports then serve the same app)."""

    bot_token: Secret
    app_token: Secret | None = None
    signing_secret: Secret | None = None
    api_url: str | None = None
    port: int = 3000
    commands: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COMMANDS))
    # An operation still running after this long says so in its thread.
    slow_operation_seconds: float = 120.0
    # How often a running operation's message refreshes its elapsed time.
    progress_refresh_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. Build it with ``Settings.load`` or directly in tests."""

    libvirt_uri: str
    libvirt_uri_explicit: bool
    data_dir: Path
    database_url: str
    libvirt_workers: int = 4
    # Deadline of one state-changing libvirt call (a memory save of a big VM takes minutes);
    # past it the job is aborted where libvirt can, and the outcome reconciled.
    libvirt_timeout: float = 3600.0
    safety_snapshot: bool = True
    # Retention of safety snapshots where a prune's policy sets none: the newest N per VM, and
    # any not older than D days.
    safety_keep_last: int = DEFAULT_SAFETY_KEEP_LAST
    safety_keep_days: int = DEFAULT_SAFETY_KEEP_DAYS
    slack: SlackSettings | None = None
    # Retention periods (which day, week, month a snapshot belongs to) are counted here.
    timezone: str = "UTC"
    # The optional daily digest: a Slack channel id and a time of day (in ``timezone``).
    digest_channel: str | None = None
    digest_at: str = "08:00"
    access: AccessPolicy = field(default_factory=lambda: AccessPolicy(()))
    # Where incremental snapshots go (None: no backup store, only full snapshots). Another
    # disk or an NFS mount in production: a store on the VMs' own disk dies with it.
    backup_dir: Path | None = None
    # Restore drills per VM pattern ([drills."<pattern>"] ready, timeout, owner): what says a
    # restored VM is up, how long to wait, whom a failure is told.
    drills: DrillPolicies = field(default_factory=DrillPolicies)
    # The offsite copy of the backup store: an S3-compatible endpoint and bucket (None: no
    # copy). Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by the S3
    # client itself, so they are never part of the settings nor of a log.
    offsite: OffsiteSettings | None = None
    # The hosts of ``[[hosts]]`` in the configuration file (empty: ``libvirt_uri`` is the one
    # host, as ``host_configs`` says).
    hosts: tuple[HostConfig, ...] = ()

    def host_configs(self) -> tuple[HostConfig, ...]:
        """The configured hosts: ``[[hosts]]``, else the one ``LIBVIRT_URI`` names (called
        after the machine in its URI, or ``local``)."""
        if self.hosts:
            return self.hosts
        return (HostConfig(host_name_from_uri(self.libvirt_uri), self.libvirt_uri),)

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
        hosts = parse_hosts(file["hosts"]) if "hosts" in file else ()
        if "hosts" in file and not hosts:
            raise InvalidInput("[[hosts]] in SNAPBOT_CONFIG lists no host; remove it or add one")
        if hosts and uri is not None and uri not in {h.uri for h in hosts}:
            raise InvalidInput(
                f"LIBVIRT_URI={uri} is set and SNAPBOT_CONFIG lists [[hosts]] without it: "
                "list every host under [[hosts]] (name, uri) and unset LIBVIRT_URI"
            )
        if hosts:
            uri = hosts[0].uri
        data_dir = Path(get("SNAPBOT_DATA_DIR", "data_dir") or default_data_dir(environ))
        database_url = get("DATABASE_URL", "database_url") or f"sqlite://{data_dir / 'snapbot.db'}"
        timeout_text = get("SNAPBOT_LIBVIRT_TIMEOUT", "libvirt_timeout") or "3600"
        try:
            libvirt_timeout = float(timeout_text)
        except ValueError:
            libvirt_timeout = 0.0
        if libvirt_timeout <= 0:
            raise InvalidInput(
                f"SNAPBOT_LIBVIRT_TIMEOUT must be a number of seconds above 0, not {timeout_text!r}"
            )
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
        safety_keep = {
            env: _whole_number(env, get(env, env.removeprefix("SNAPBOT_").lower()), default)
            for env, default in (
                ("SNAPBOT_SAFETY_KEEP_LAST", DEFAULT_SAFETY_KEEP_LAST),
                ("SNAPBOT_SAFETY_KEEP_DAYS", DEFAULT_SAFETY_KEEP_DAYS),
            )
        }
        timezone = get("SNAPBOT_TIMEZONE", "timezone") or "UTC"
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"SNAPBOT_TIMEZONE {timezone!r} is not a time zone; use a name such as "
                "UTC or Europe/Berlin"
            ) from None
        digest_at = get("SNAPBOT_DIGEST_AT", "digest_at") or "08:00"
        if not re.match(r"^([01]?\d|2[0-3]):[0-5]\d$", digest_at):
            raise InvalidInput(f"SNAPBOT_DIGEST_AT must be a time of day HH:MM, not {digest_at!r}")
        backup_dir = _backup_dir(get("SNAPBOT_BACKUP_DIR", "backup_dir"))
        offsite = _offsite(
            get("SNAPBOT_OFFSITE_URL", "offsite_url"),
            get("SNAPBOT_OFFSITE_BUCKET", "offsite_bucket"),
            get("SNAPBOT_OFFSITE_REGION", "offsite_region"),
            get("SNAPBOT_OFFSITE_DELETE_AFTER_DAYS", "offsite_delete_after_days"),
        )
        return cls(
            hosts=hosts,
            backup_dir=backup_dir,
            drills=parse_drill_policies(_table(file, "drills")),
            offsite=offsite,
            timezone=timezone,
            digest_channel=get("SNAPBOT_DIGEST_CHANNEL", "digest_channel"),
            digest_at=digest_at,
            slack=_slack_settings(environ, file),
            access=_access_policy(
                environ,
                file,
                [h.name for h in hosts] or [host_name_from_uri(uri or DEFAULT_LIBVIRT_URI)],
            ),
            libvirt_uri=uri or DEFAULT_LIBVIRT_URI,
            libvirt_uri_explicit=uri is not None,
            data_dir=data_dir,
            database_url=database_url,
            libvirt_workers=int(workers_text),
            libvirt_timeout=libvirt_timeout,
            safety_snapshot=safety_text in ("true", "1", "yes"),
            safety_keep_last=safety_keep["SNAPBOT_SAFETY_KEEP_LAST"],
            safety_keep_days=safety_keep["SNAPBOT_SAFETY_KEEP_DAYS"],
        )


def _backup_dir(text: str | None) -> Path | None:
    """The backup store's directory. It must exist already: created on demand, a store meant
    for an NFS mount that is not mounted would quietly land on the local disk."""
    if not text:
        return None
    path = Path(text)
    if not path.is_absolute():
        raise InvalidInput(f"SNAPBOT_BACKUP_DIR must be an absolute path, not {text!r}")
    if not path.is_dir():
        raise InvalidInput(
            f"SNAPBOT_BACKUP_DIR={text} is not a directory: create it (on another disk or a "
            "mounted NFS share) or mount what should be there, then start snapbot again"
        )
    return path


@dataclass(frozen=True, slots=True)
class OffsiteSettings:
    """Where the offsite copy of the backup store goes, and how long a point deleted from the
    store is kept there (so a mistaken prune can still be restored from the copy)."""

    url: str
    bucket: str
    region: str = "us-east-1"
    delete_after_days: int = DEFAULT_DELETE_AFTER_DAYS


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _offsite(
    url: str | None, bucket: str | None, region: str | None, days: str | None
) -> OffsiteSettings | None:
    if not url and not bucket:
        return None
    if not url or not bucket:
        raise InvalidInput(
            "the offsite copy needs both SNAPBOT_OFFSITE_URL (the S3 endpoint, such as "
            "https://s3.example.com) and SNAPBOT_OFFSITE_BUCKET"
        )
    if not re.match(r"^https?://[^\s/@]+(/\S*)?$", url):
        raise InvalidInput(
            f"SNAPBOT_OFFSITE_URL must be an http(s) URL without credentials, not {url!r}"
        )
    if not _BUCKET.match(bucket):
        raise InvalidInput(
            f"SNAPBOT_OFFSITE_BUCKET {bucket!r} is not a bucket name (3-63 lower-case letters, "
            "digits, '.' and '-')"
        )
    return OffsiteSettings(
        url=url,
        bucket=bucket,
        region=region or "us-east-1",
        delete_after_days=_whole_number(
            "SNAPBOT_OFFSITE_DELETE_AFTER_DAYS", days, DEFAULT_DELETE_AFTER_DAYS
        ),
    )


def _whole_number(name: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise InvalidInput(f"{name} must be a whole number of 0 or more, not {text!r}")
    return int(text)


def _table(file: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = file.get(key, {})
    if not isinstance(value, Mapping):
        raise InvalidInput(f"[{key}] in SNAPBOT_CONFIG must be a table")
    return value


def _slack_settings(environ: Mapping[str, str], file: Mapping[str, object]) -> SlackSettings | None:
    table = _table(file, "slack")

    def get(env: str, key: str) -> str | None:
        value = environ.get(env) or table.get(key)
        return None if value in (None, "") else str(value)

    bot_token = get("SLACK_BOT_TOKEN", "bot_token")
    app_token = get("SLACK_APP_TOKEN", "app_token")
    signing_secret = get("SLACK_SIGNING_SECRET", "signing_secret")
    if bot_token is None:
        if app_token or signing_secret:
            raise InvalidInput(
                "SLACK_BOT_TOKEN is missing: Slack needs the bot token (xoxb-...) from the "
                "app's OAuth & Permissions page, besides the app token or signing secret"
            )
        return None
    if not bot_token.startswith("xoxb-"):
        raise InvalidInput("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
    if app_token is None and signing_secret is None:
        raise InvalidInput(
            "Slack needs a transport: set SLACK_APP_TOKEN (xapp-..., Socket Mode, no public "
            "URL needed) or SLACK_SIGNING_SECRET (HTTP mode on PORT)"
        )
    if app_token is not None and not app_token.startswith("xapp-"):
        raise InvalidInput("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
    port_text = get("PORT", "port") or "3000"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidInput(f"PORT must be a port number, not {port_text!r}")
    commands = dict(DEFAULT_COMMANDS)
    for name, value in _table(table, "commands").items():
        if name not in commands:
            raise InvalidInput(
                f"[slack.commands] has {name!r}; the commands are {', '.join(commands)}"
            )
        commands[name] = str(value)
    for name in commands:
        commands[name] = environ.get(f"SNAPBOT_{name.upper()}_COMMAND") or commands[name]
    for name, value in commands.items():
        if not value.startswith("/") or len(value) > 32 or " " in value:
            raise InvalidInput(
                f"the {name} command {value!r} must start with / and be at most 32 characters "
                "without spaces"
            )
    slow_text = get("SNAPBOT_SLOW_OPERATION_SECONDS", "slow_operation_seconds") or "120"
    try:
        slow = float(slow_text)
    except ValueError:
        raise InvalidInput(
            f"SNAPBOT_SLOW_OPERATION_SECONDS must be a number of seconds, not {slow_text!r}"
        ) from None
    return SlackSettings(
        bot_token=Secret(bot_token),
        app_token=Secret(app_token) if app_token else None,
        signing_secret=Secret(signing_secret) if signing_secret else None,
        api_url=get("SLACK_API_URL", "api_url"),
        port=int(port_text),
        commands=commands,
        slow_operation_seconds=slow,
    )


def _access_policy(
    environ: Mapping[str, str], file: Mapping[str, object], host_names: Sequence[str]
) -> AccessPolicy:
    grants = _table(file, "access").get("grants", [])
    if not isinstance(grants, list) or not all(isinstance(g, Mapping) for g in grants):
        raise InvalidInput("[[access.grants]] in SNAPBOT_CONFIG must be a list of tables")
    admins = environ.get("SNAPBOT_ADMINS", "").split(",")
    policy = parse_grants(grants, admins)
    # A host pattern that names no configured host grants nothing: a typo, said at start-up
    # rather than found as a refusal.
    for n, grant in enumerate(policy.grants, start=1):
        for pattern in grant.hosts:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in host_names):
                raise InvalidInput(
                    f"access grant #{n}: hosts names {pattern!r}, which is no configured host "
                    f"(the hosts are {', '.join(host_names)})"
                )
    return policy
