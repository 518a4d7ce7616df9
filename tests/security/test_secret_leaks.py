"""R20: no bot token, app token or signing secret in a log line, a Slack message or a catalogue row.

The session-wide check (``tests.security.leakscan.SessionLeakCheck``, registered in
tests/conftest.py) scans everything the suite produces; these tests prove the scanner finds a
planted secret, that a leak fails a whole pytest run, and scan one busy Slack session with
every logger at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import blocks
from core.domain.operation import Actor, OperationKind
from tests.conftest import ALICE, Services
from tests.fakes import slack as fake_slack
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeSlack
from tests.reliability.figures import record
from tests.security.leakscan import LeakScanner, ScanningHandler, scan_rows, session_scanner
from tests.slack.harness import ADMIN, CHANNEL, SECRET, VIEWER, SlackBot, confirm_value

ROOT = Path(__file__).resolve().parents[2]
PLANTED_TOKEN = "xoxb-4242-planted-by-the-scanner-test"
PLANTED_SECRET = "0123planted-signing-secret-4567"


@contextmanager
def scanning(scanner: LeakScanner) -> Iterator[None]:
    """Every logger at DEBUG, and everything the fake Slack receives, into ``scanner``."""
    root = logging.getLogger()
    handler = ScanningHandler(scanner)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    fake_slack.RECEIVED.append(scanner.scan)
    try:
        yield
    finally:
        fake_slack.RECEIVED.remove(scanner.scan)
        root.removeHandler(handler)
        root.setLevel(level)


def _session_forgets(*planted: str) -> None:
    """Secrets planted on purpose must not fail the session they were planted in."""
    session = session_scanner()
    for text in planted:
        if session is not None:
            session.discard(text)


async def test_the_scanner_finds_a_planted_secret_in_logs_slack_and_rows(
    services: Services,
) -> None:
    scanner = LeakScanner((PLANTED_SECRET,))
    log = logging.getLogger("snapbot.test.planted")
    try:
        async with FakeSlack() as slack:
            client = AsyncWebClient(token="xoxb-test-token", base_url=slack.api_url)
            with scanning(scanner):
                log.debug("signing with %s", PLANTED_SECRET)
                # The product masks tokens in its log handler: a masked token is no leak.
                log.warning("calling Slack with %s", PLANTED_TOKEN)
                log.info("database at postgres://snapbot:hunter2@db.example/snapbot")
                # The client's own token travels in the Authorization header: not a leak.
                await client.chat_postMessage(channel=CHANNEL, text=f"token {PLANTED_TOKEN}")
        found = [(leak.where, leak.found) for leak in scanner.leaks]
        assert ("log snapbot.test.planted", PLANTED_SECRET) in found
        assert ("log snapbot.test.planted", "postgres://snapbot:hunter2@") in found
        assert ("Slack chat.postMessage", PLANTED_TOKEN) in found
        assert not any(
            leak.where.startswith("log") and "xoxb" in leak.found for leak in scanner.leaks
        )
        assert not any("xoxb-test-token" in leak.found for leak in scanner.leaks)

        operation = services.runner.new_operation(
            OperationKind.SNAPSHOT, Actor(user="U1", via="test"), vm_uuid="", vm_name=PLANTED_SECRET
        )
        await services.catalogue.record_finished(operation)
        before = len(scanner.leaks)
        assert await scan_rows(scanner) >= 1
        assert [leak.where for leak in scanner.leaks[before:]] == ["catalogue operation"]
    finally:
        _session_forgets(PLANTED_TOKEN, PLANTED_SECRET, "hunter2@")


CHILD_CONFTEST = """
from tests.security.leakscan import SessionLeakCheck

def pytest_configure(config):
    config.pluginmanager.register(SessionLeakCheck(), "snapbot-leak-scan")
"""

CHILD_TEST = """
import logging

def test_logs():
    logging.getLogger("snapbot.child").debug("%s", {line!r})
"""


def _child_run(tmp_path: Path, line: str) -> subprocess.CompletedProcess[str]:
    """A separate pytest session with the leak check, whose one passing test logs ``line``."""
    tmp_path.mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(CHILD_CONFTEST)
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD_TEST.format(line=line)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SNAPBOT_RELIABILITY_LOG", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_leak_fails_the_whole_run_and_shows_the_line(tmp_path: Path) -> None:
    clean = _child_run(tmp_path / "clean", "nothing secret here")
    assert clean.returncode == 0, clean.stdout[-2000:]
    leaky = _child_run(tmp_path / "leaky", f"verifying with {SECRET}")
    assert leaky.returncode == 1, leaky.stdout[-2000:]
    assert "1 passed" in leaky.stdout, "the test itself passed: the leak check failed the run"
    assert "SECRET LEAKS" in leaky.stdout
    assert f"log snapbot.child: {SECRET!r} in: DEBUG snapbot.child: verifying with" in leaky.stdout


async def test_a_busy_slack_session_at_debug_leaks_nothing(
    bot: SlackBot, services: Services
) -> None:
    """Commands, a modal, buttons, refusals, Slack errors and 429s, a forged request and an App
    Home event, with every logger at DEBUG: the log, every Slack payload and every row are clean."""
    scanner = LeakScanner()
    await services.service.create_snapshot("web-02", "old", actor=ALICE)
    with scanning(scanner):
        await bot.command("/snapshot web-01 first --desc 'before the upgrade'", user=ADMIN)
        await bot.slack.wait_for_message(lambda m: m.text.startswith("✅"), timeout=15)
        await bot.idle()
        for line in ("/snapshot list", "/snapshot vms", "/snapshot help", "/prune help"):
            await bot.command(line, user=ADMIN)
        await bot.command("/snapshot web-01 sneaky", user=VIEWER)  # refused and audited
        bot.slack.rate_limit("chat.update", times=2)
        bot.slack.fail("chat.postMessage", "not_in_channel")  # falls back to response_url
        await bot.command("/snapshot web-01 second", user=ADMIN)
        await bot.idle()

        await bot.command("/restore web-01 first", user=ADMIN)
        view = await bot.slack.wait_until(
            lambda: next(
                (
                    v
                    for v in bot.slack.views.values()
                    if v.get("callback_id") == blocks.RESTORE_CALLBACK
                ),
                None,
            )
        )
        typed = {blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": "web-01"}}}
        await bot.submit(view, typed, user=ADMIN)
        await bot.idle()

        answer = await bot.command("/snapshot delete web-02 old", user=ADMIN)
        preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
        value = confirm_value(preview[0].blocks)
        bot.slack.fail("chat.postMessage", "invalid_auth")  # an auth error answered by Slack
        await bot.click(blocks.CONFIRM_ACTION, value, user=ADMIN, response_url=answer.response_url)
        await bot.idle()

        forged = req.slash_command_body(
            "/snapshot", "web-01 forged", response_url=bot.slack.new_response_url(), trigger_id="t"
        )
        status, _, _ = await bot.post(forged, req.sign("wrong-" + SECRET, forged))
        assert status == 401
        event = req.app_home_opened_event_body(ADMIN)
        await bot.signed(event)
        await bot.slack.wait_for(lambda c: c.method == "views.publish")
        await asyncio.sleep(0.2)
        await bot.idle()
    rows = await scan_rows(scanner)
    payloads = len(bot.slack.calls) + sum(len(h.posts) for h in bot.slack.hooks.values())
    assert scanner.scanned > payloads + rows, "logs were scanned too"
    assert payloads > 20
    record(
        "Secret-leak scan (busy Slack session)",
        "one Slack session at DEBUG: commands, restore modal, Confirm button, refusal, 429s, "
        "Slack errors, a forged request, App Home; logs, Slack payloads and catalogue rows",
        f"{scanner.scanned} texts scanned ({payloads} Slack payloads, {rows} rows), "
        f"{len(scanner.leaks)} leaks",
        passed=not scanner.leaks,
    )
    assert not scanner.leaks, "\n".join(str(leak) for leak in scanner.leaks)
