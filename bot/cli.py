"""The ``snapbot`` command: ``snapbot console`` or ``snapbot run``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from bot import messages, redaction
from bot.mrkdwn import plain
from core.bootstrap import build_core
from core.config import Settings
from core.errors import CoreError


async def _console(settings: Settings, *, with_scheduler: bool) -> int:
    from bot.console import run_console

    async with build_core(settings) as core:
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
    async with build_core(settings) as core:
        await run_slack(core, settings.slack, stop)
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redaction.install(handler)
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
