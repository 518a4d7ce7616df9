"""The ``snapbot`` command: ``snapbot console`` or ``snapbot run``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from bot import messages
from core.bootstrap import build_core
from core.config import Settings
from core.errors import CoreError


async def _console(settings: Settings) -> int:
    from bot.console import run_console

    async with build_core(settings) as core:
        return await run_console(core)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="snapbot", description=__doc__)
    parser.add_argument(
        "mode",
        nargs="?",
        default="run",
        choices=("run", "console"),
        help="run: the bot with the front ends configured (today the console; the Slack "
        "front end joins when its settings exist); console: the terminal front end",
    )
    parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("SNAPBOT_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.load(os.environ)
        return asyncio.run(_console(settings))
    except CoreError as exc:
        print(messages.error_text(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
