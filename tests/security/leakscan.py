"""R20: no Slack token, signing secret or password-bearing URI in any log line, Slack message or
catalogue row, over the whole test session.

``SessionLeakCheck`` is a pytest plugin (tests/conftest.py registers it). At session start it
puts every logger at DEBUG and adds a handler that writes each record the way snapbot's own log
handler would (the product masks tokens in its handler, ``bot.redaction``) and scans the
result; it also reads everything the fake Slack receives (``tests.fakes.slack.RECEIVED``) and,
through ``scan_catalogue``, the rows each test's catalogue holds at teardown. At session end a
leak fails the run, with the leaking line shown.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from tortoise.models import Model

from bot.redaction import RedactingFilter
from core.catalogue import models as catalogue_models
from tests.fakes import slack as fake_slack
from tests.reliability.figures import record
from tests.slack.harness import SECRET

# Slack bot, user, app-level, refresh and legacy tokens: a prefix and at least one character of
# the token itself (the product's mask "xoxb-[redacted]" is not a token).
TOKEN = re.compile(r"\b(?:xox[abeoprs]|xapp)-[A-Za-z0-9][A-Za-z0-9-]*")
# A URI with a password in it (postgres://user:secret@host, qemu+ssh://user:pw@host).
URI_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:[^/\s@\"']+@")
# The signing secrets the tests configure (tokens are caught by their pattern).
TEST_SECRETS: tuple[str, ...] = (SECRET,)
SHOWN = 300  # characters of a leaking line shown in the report


@dataclass(frozen=True, slots=True)
class Leak:
    where: str
    found: str
    line: str

    def __str__(self) -> str:
        line = self.line if len(self.line) <= SHOWN else self.line[:SHOWN] + "…"
        return f"{self.where}: {self.found!r} in: {line}"


@dataclass
class LeakScanner:
    """Scans text for ``secrets`` and the token and URI-password patterns; keeps what it found."""

    secrets: tuple[str, ...] = TEST_SECRETS
    leaks: list[Leak] = field(default_factory=list)
    scanned: int = 0

    def scan(self, where: str, text: str) -> list[Leak]:
        self.scanned += 1
        found = []
        for line in text.splitlines():
            hits = [m.group(0) for m in TOKEN.finditer(line)]
            hits += [m.group(0) for m in URI_PASSWORD.finditer(line)]
            hits += [s for s in self.secrets if s in line]
            found += [Leak(where, hit, line) for hit in hits]
        self.leaks += found
        return found

    def discard(self, containing: str) -> int:
        """Forget leaks whose line contains ``containing`` (a secret a test planted on purpose)."""
        kept = [leak for leak in self.leaks if containing not in leak.line]
        dropped = len(self.leaks) - len(kept)
        self.leaks = kept
        return dropped


class ScanningHandler(logging.Handler):
    """Every log record, as snapbot's handler would write it (masked by ``bot.redaction``)."""

    def __init__(self, scanner: LeakScanner) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._mask = RedactingFilter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # A copy: the mask rewrites the record, and other handlers (caplog) see the original.
            masked = copy.copy(record)
            self._mask.filter(masked)
            self.scanner.scan(f"log {record.name}", self.format(masked))
        except Exception:
            self.handleError(record)


async def scan_rows(scanner: LeakScanner) -> int:
    """Scan every row of every table of the open tortoise catalogue; return the row count."""
    rows = 0
    for model in _catalogue_models():
        for row in await model.all().values():
            rows += 1
            scanner.scan(f"catalogue {model._meta.db_table}", json.dumps(row, default=str))
    return rows


def _catalogue_models() -> list[type[Model]]:
    return [
        m
        for m in vars(catalogue_models).values()
        if isinstance(m, type) and issubclass(m, Model) and m is not Model and not m._meta.abstract
    ]


_session: LeakScanner | None = None


def session_scanner() -> LeakScanner | None:
    """The scanner of the running session (None outside one, e.g. under -p no:…)."""
    return _session


async def scan_catalogue() -> None:
    """For the ``catalogue`` fixture's teardown: the rows a test leaves, into the session scan."""
    if _session is not None:
        await scan_rows(_session)


class SessionLeakCheck:
    """The pytest plugin: capture during the session, fail the run on a leak."""

    def __init__(self, secrets: Iterable[str] = TEST_SECRETS) -> None:
        self.scanner = LeakScanner(tuple(secrets))
        self._handler = ScanningHandler(self.scanner)
        self._root_level = logging.WARNING

    def pytest_configure(self, config: pytest.Config) -> None:
        # Every logger runs at DEBUG for the scan; reports and caplog keep showing what they
        # showed before (WARNING and above, Python's default) unless --log-level says otherwise.
        # Set here, before pytest's logging plugin saves the root level it restores later.
        if config.getoption("log_level", None) is None and not config.getini("log_level"):
            config.option.log_level = "WARNING"
        global _session
        _session = self.scanner
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self._handler)
        fake_slack.RECEIVED.append(self._observe)

    def _observe(self, where: str, text: str) -> None:
        self.scanner.scan(where, text)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        global _session
        _session = None
        root = logging.getLogger()
        root.removeHandler(self._handler)
        root.setLevel(self._root_level)
        if self._observe in fake_slack.RECEIVED:
            fake_slack.RECEIVED.remove(self._observe)
        if self.scanner.leaks:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        record(
            "Secret-leak scan (whole session)",
            "every log line of every logger at DEBUG (as snapbot's masked handler writes it), "
            "every payload the fake Slack received, every catalogue row a test left: scanned "
            "for the signing secret, xoxb-/xapp-/xoxp- tokens and passwords in URIs",
            f"{self.scanner.scanned} texts scanned, {len(self.scanner.leaks)} leaks",
            passed=not self.scanner.leaks,
        )

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.scanner.leaks:
            return
        terminalreporter.section("SECRET LEAKS (R20)", sep="=", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(self.scanner.leaks)} leak(s) in {self.scanner.scanned} scanned log lines, "
            "Slack payloads and catalogue rows; the run fails:"
        )
        for leak in self.scanner.leaks[:50]:
            terminalreporter.write_line(f"  {leak}")
