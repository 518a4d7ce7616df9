"""``snapbot run`` as a real process with Slack settings: the composition root, both transports,
the health check, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeSlack
from tests.slack.harness import SECRET

NODE_XML = Path(__file__).resolve().parents[1] / "contract" / "data" / "node.xml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_snapbot_run_serves_slack_over_http_and_socket_mode_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    node = tmp_path / "node.xml"
    shutil.copy(NODE_XML, node)
    port = free_port()
    async with FakeSlack() as slack:
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
