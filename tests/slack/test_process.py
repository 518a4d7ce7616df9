"""``snapbot run`` as a real process with Slack settings: the composition root, both transports,
the health check, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from core.catalogue.db import open_database
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.domain.operation import Actor, OperationKind, Stage
from core.services.operations import OperationRunner
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeSlack
from tests.slack.harness import SECRET

NODE_XML = Path(__file__).resolve().parents[1] / "contract" / "data" / "node.xml"
WEB_01 = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # in node.xml
DEAD = f"{socket.gethostname()}:999999:dead"  # a process of this host that is gone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def snapbot_run(
    tmp_path: Path, slack: FakeSlack, port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``snapbot run`` on the test driver, serving the fake Slack; SIGTERM when done."""
    node = tmp_path / "node.xml"
    shutil.copy(NODE_XML, node)
    env = dict(os.environ)
    env.update(
        LIBVIRT_URI=f"test://{node}",
        SNAPBOT_DATA_DIR=str(tmp_path / "data"),
        SLACK_BOT_TOKEN="xoxb-process-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_APP_TOKEN="xapp-1-process-test",
        SLACK_API_URL=slack.api_url,
        PORT=str(port),
        SNAPBOT_ADMINS="U_ADMIN",
        SNAPBOT_LOG_LEVEL="DEBUG",
    )
    env.pop("DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 60)


async def test_snapbot_run_serves_slack_over_http_and_socket_mode_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with FakeSlack() as slack, snapbot_run(tmp_path, slack, port) as proc:
        try:
            assert proc.stdout is not None
            banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert f"Slack via HTTP on port {port} and Socket Mode" in banner
            await slack.wait_for_socket()
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                    assert health.status == 200
                body = req.slash_command_body(
                    "/snapshot",
                    "help",
                    response_url=slack.new_response_url(),
                    trigger_id=slack.new_trigger_id(),
                    user_id="U_ADMIN",
                )
                async with session.post(
                    f"http://127.0.0.1:{port}/slack/events",
                    data=body,
                    headers=req.sign(SECRET, body),
                ) as answer:
                    assert answer.status == 200
                    assert "Usage:" in await answer.text()
            payload = req.slash_command_payload(
                "/snapshot",
                "vms",
                response_url=slack.new_response_url(),
                trigger_id=slack.new_trigger_id(),
                user_id="U_ADMIN",
            )
            await slack.send_envelope("slash_commands", payload)
            posts = await slack.wait_until(
                lambda: [p for h in slack.hooks for p in slack.responses(h)] or None
            )
            assert "web-01" in (posts[0].text or "")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert b"xoxb-process-test" not in err, "the bot token never reaches the log"
        assert b"xapp-1-process-test" not in err


async def test_the_requester_of_an_operation_a_crash_interrupted_hears_the_final_word(
    tmp_path: Path,
) -> None:
    """A process died mid-snapshot; the next ``snapbot run`` reconciles it and tells the person
    who asked, in the channel where they asked."""
    (tmp_path / "data").mkdir()
    async with open_database(f"sqlite://{tmp_path / 'data' / 'snapbot.db'}"):
        catalogue = TortoiseCatalogue(SystemClock())
        runner = OperationRunner(catalogue, SystemClock(), DEAD)
        op = runner.new_operation(
            OperationKind.SNAPSHOT,
            Actor(user="UALICE01", via="slack", team="T1", channel="C_OPS"),
            vm_uuid=WEB_01,
            vm_name="web-01",
            label="before-upgrade",
        )
        await catalogue.begin_operation(op, DEAD)
        await catalogue.set_stage(op.id, Stage.CHECKING)
    async with FakeSlack() as slack, snapbot_run(tmp_path, slack, free_port()):
        [said] = await slack.wait_until(lambda: slack.messages("C_OPS") or None, timeout=30)
    assert "<@UALICE01>" in said.text
    assert "snapshot of web-01" in said.text
    assert "before the snapshot was started" in said.text
