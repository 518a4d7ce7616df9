"""The ``snapbot`` command: ``snapbot console`` or ``snapbot run``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from bot import messages, redaction
from bot.metrics import Metrics, metrics_port, metrics_server
from bot.mrkdwn import plain
from core.bootstrap import build_core
from core.config import Settings
from core.errors import CoreError


async def _console(settings: Settings, *, with_scheduler: bool) -> int:
    from bot.console import run_console

    metrics = Metrics()
    async with build_core(settings, observer=metrics) as core:
        metrics.bind(core)
        async with metrics_server(metrics, metrics_port(os.environ)):
            return await run_console(core, with_scheduler=with_scheduler)


async def _doctor(settings: Settings) -> int:
    from core.bootstrap_doctor import run_doctor
    from core.services.doctor import failed

    findings = await run_doctor(settings, public_url=os.environ.get("SNAPBOT_PUBLIC_URL"))
    print(messages.doctor_report(findings))
    return 1 if failed(findings) else 0


async def _slack(settings: Settings) -> int:
    from bot.slack.runner import run_slack

    assert settings.slack is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    # Without Slack's HTTP server (Socket Mode only), /metrics has a server of its own if asked.
    port = metrics_port(os.environ) if settings.slack.signing_secret is None else None
    async with build_core(settings, observer=metrics) as core:
        metrics.bind(core)
        async with metrics_server(metrics, port):
            await run_slack(core, settings.slack, stop, metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="snapbot", description=__doc__)
    parser.add_argument(
        "mode",
        nargs="?",
        default="run",
        choices=("run", "console", "doctor"),
        help="run: the Slack bot when SLACK_BOT_TOKEN and a transport are set, else the "
        "console; console: the terminal front end; doctor: check the set-up and say how to "
        "fix what is wrong (exit status 1 when a check fails)",
    )
    args = parser.parse_args(argv)
    log_format = os.environ.get("SNAPBOT_LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in redaction.LOG_FORMATS:
        print(plain(messages.log_format_unknown(log_format)), file=sys.stderr)
        return 2
    handler = redaction.log_handler(sys.stderr, log_format)
    logging.basicConfig(
        level=os.environ.get("SNAPBOT_LOG_LEVEL", "WARNING").upper(), handlers=[handler]
    )
    try:
        settings = Settings.load(os.environ)
        if args.mode == "doctor":
            return asyncio.run(_doctor(settings))
        if args.mode == "run" and settings.slack is not None:
            return asyncio.run(_slack(settings))
        # `run` is the service: schedules run too; `console` is an interactive session only.
        return asyncio.run(_console(settings, with_scheduler=args.mode == "run"))
    except CoreError as exc:
        print(plain(messages.error_text(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
