"""The console front end: the Slack grammar, one command per line, from a terminal or a pipe.

Whoever can run this on the host can already use virsh, so the console acts as the local
operator with every right.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import TextIO

from bot import messages
from bot.dispatch import (
    ConfirmArchive,
    ConfirmDelete,
    ConfirmPrune,
    ConfirmRestore,
    ConfirmUnlock,
    Dispatcher,
    DrillView,
    Outcome,
    PickSnapshot,
    Reply,
    UsageView,
)
from bot.grammar import PRUNE_ALL, UsageError, parse_line
from bot.mrkdwn import plain
from bot.previews import StoreRestorePreview
from core.domain.operation import Actor, Operation, ProgressCallback, Stage
from core.domain.snapshot import Snapshot
from core.domain.usage import Forecast, UsageReport
from core.errors import CoreError
from core.ports import ScheduleRunNow
from core.services.drills import DrillStatus
from core.services.facade import Core
from core.services.reports import Digest, RunReport
from scheduler.service import build_scheduler

logger = logging.getLogger(__name__)


class Console:
    """Reads lines, runs commands, writes replies and progress."""

    def __init__(
        self,
        core: Core,
        stdin: TextIO,
        stdout: TextIO,
        scheduler: ScheduleRunNow | None = None,
    ) -> None:
        self._core = core
        self._stdin = stdin
        self._stdout = stdout
        # Reading a terminal blocks; it gets its own thread, not the loop and not libvirt's pool.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stdin")
        self._actor = Actor(user=f"console:{getpass.getuser()}", via="console")
        self._dispatcher = Dispatcher(core, access=None, scheduler=scheduler)

    def _say(self, text: str) -> None:
        self._stdout.write(plain(text) + "\n")
        self._stdout.flush()

    async def _readline(self) -> str | None:
        line = await asyncio.get_running_loop().run_in_executor(self._reader, self._stdin.readline)
        return None if line == "" else line.rstrip("\r\n")

    async def run(self) -> int:
        """Serve until end of input; return the exit status (1 if any command failed)."""
        interactive = self._stdin.isatty()
        failed = False
        try:
            while True:
                if interactive:
                    self._stdout.write("snapbot> ")
                    self._stdout.flush()
                line = await self._readline()
                if line is None:
                    return 1 if failed else 0
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line.strip() in ("exit", "quit"):
                    return 1 if failed else 0
                failed = not await self._handle_guarded(line) or failed
        finally:
            self._reader.shutdown(wait=False, cancel_futures=True)

    async def _handle_guarded(self, line: str) -> bool:
        """``handle``, and the last resort: no line, however odd, ends the loop (and with it
        the scheduler that runs beside it). The person gets a reference to quote; the log has
        the traceback under the same reference."""
        try:
            return await self.handle(line)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            logger.exception("command %r failed (reference %s)", line[:200], reference)
            self._say(messages.internal_error(reference))
            return False

    async def handle(self, line: str) -> bool:
        """Run one line; return False when it failed (unexpected errors propagate)."""
        try:
            command = parse_line(line)
        except UsageError as exc:
            self._say(messages.usage_error_text(exc))
            return False
        started = time.monotonic()

        async def progress(stage: Stage) -> None:
            elapsed = messages.human_seconds(time.monotonic() - started)
            self._say(f"  … {messages.stage_text(stage)} ({elapsed})")

        try:
            outcome = await self._dispatcher.handle(command, self._actor, progress)
            self._say(await self._follow_up(outcome, progress))
            return True
        except CoreError as exc:
            self._say(messages.error_text(exc))
            return False

    async def _ask(self, prompt: str) -> str:
        self._stdout.write(plain(prompt))
        self._stdout.flush()
        typed = await self._readline()
        if not interactive_echo(self._stdin):
            self._stdout.write("\n")
        return typed or ""

    async def _follow_up(self, outcome: Outcome, progress: ProgressCallback) -> str:
        """Confirm what needs confirming, in the terminal."""
        actor = self._actor
        if isinstance(outcome, Reply):
            return outcome.text
        if isinstance(outcome, UsageView):
            return await self._usage(outcome)
        if isinstance(outcome, DrillView):
            return await self._drill(outcome)
        if isinstance(outcome, PickSnapshot):
            return messages.pick_snapshot(outcome.vm, outcome.as_name)
        if isinstance(outcome, ConfirmArchive):
            # It deletes the internal snapshot and its memory state: say so, then ask.
            self._say(messages.archive_prompt(outcome.snapshot))
            expected = outcome.snapshot.vm_name
            typed = await self._ask(messages.CONFIRM_PROMPT)
            if typed != expected:
                await self._dispatcher.cancel(outcome.confirmation.id, actor)
                return messages.typed_mismatch("Archive", expected, typed)
            return await self._dispatcher.confirm(outcome.confirmation.id, actor, progress)
        if isinstance(outcome, ConfirmDelete):
            # The console is the local operator (like virsh): delete needs no extra step here.
            if outcome.reclaim is not None:
                self._say(messages.reclaim_line(outcome.reclaim))
            return await self._dispatcher.confirm(outcome.confirmation.id, actor, progress)
        if isinstance(outcome, ConfirmUnlock):
            self._say(messages.unlock_preview(outcome.preview))
            expected = outcome.preview.vm.name
            typed = await self._ask(messages.unlock_confirm_prompt(expected))
            if typed != expected:
                await self._dispatcher.cancel(outcome.confirmation.id, actor)
                return messages.typed_mismatch("Unlock", expected, typed)
            return await self._dispatcher.confirm(outcome.confirmation.id, actor, progress)
        if isinstance(outcome, ConfirmPrune):
            dry_run = outcome.confirmation is None
            self._say(
                messages.prune_preview(outcome.preview, dry_run=dry_run, reclaim=outcome.reclaim)
            )
            if outcome.confirmation is None:
                return messages.prune_nothing_confirmed(dry_run=bool(outcome.preview.to_delete))
            expected = outcome.confirmation.vm_name or PRUNE_ALL
            typed = await self._ask(messages.prune_confirm_prompt(expected))
            if typed != expected:
                await self._dispatcher.cancel(outcome.confirmation.id, actor)
                return messages.typed_mismatch("Prune", expected, typed)
            return await self._dispatcher.confirm(outcome.confirmation.id, actor, progress)
        assert isinstance(outcome, ConfirmRestore)
        self._say(messages.restore_warning(outcome.preview))
        expected = outcome.typed_name
        copy = isinstance(outcome.preview, StoreRestorePreview) and outcome.preview.as_name
        prompt = messages.new_vm_confirm_prompt(expected) if copy else messages.CONFIRM_PROMPT
        typed = await self._ask(prompt)
        if typed != expected:
            await self._dispatcher.cancel(outcome.confirmation.id, actor)
            return messages.restore_cancelled(expected, typed)
        return await self._dispatcher.confirm(outcome.confirmation.id, actor, progress)

    async def _drill(self, view: DrillView) -> str:
        """The drill's report; its screenshot, which a terminal cannot show, is written under
        the data directory and named."""
        text = messages.drill_report(view.outcome)
        drill = view.outcome.drill
        if drill.screenshot is None:
            return text
        path = (
            self._core.settings.data_dir
            / "drills"
            / f"drill-{safe_file_part(drill.vm_name)}-{drill.id}.png"
        )
        await asyncio.to_thread(write_file, path, drill.screenshot)
        return f"{text}\n{messages.screenshot_saved(str(path))}"

    async def _usage(self, view: UsageView) -> str:
        """A terminal cannot show the chart: it is written under the data directory and the
        report names the file."""
        if view.chart is None:
            text = messages.usage_report(view.report)
            return text if view.chart_note is None else f"{text}\n{view.chart_note}"
        subject = view.report.vm or "host"
        stamp = view.report.taken_at.strftime("%Y%m%d-%H%M%S")
        path = (
            self._core.settings.data_dir / "charts" / f"usage-{safe_file_part(subject)}-{stamp}.png"
        )
        await asyncio.to_thread(write_file, path, view.chart)
        return messages.usage_report(view.report, chart_path=str(path))


def safe_file_part(name: str) -> str:
    """A VM's name as part of a file name (libvirt allows '/' and worse in names)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".")
    return cleaned[:64] or "vm"


def write_file(path: Path, data: bytes) -> None:
    """Whole or not at all: a reader never sees half a chart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def interactive_echo(stream: TextIO) -> bool:
    """A terminal echoes the typed answer and its newline; a pipe does not."""
    return stream.isatty()


class ConsoleReporter:
    """Scheduler reports and hold reminders, printed where the console prints (charts written
    under ``charts_dir``, when given)."""

    def __init__(self, stdout: TextIO, charts_dir: Path | None = None) -> None:
        self._stdout = stdout
        self._charts_dir = charts_dir

    async def run_report(self, report: RunReport) -> None:
        self._stdout.write(plain(messages.run_report(report)) + "\n")
        self._stdout.flush()

    async def hold_reminder(self, snapshot: Snapshot) -> None:
        self._stdout.write(plain(messages.hold_reminder(snapshot)) + "\n")
        self._stdout.flush()

    async def digest(self, digest: Digest) -> None:
        self._stdout.write(plain(messages.digest_text(digest)) + "\n")
        self._stdout.flush()

    async def usage_report(self, channel: str, report: UsageReport, chart: bytes | None) -> None:
        text = messages.weekly_usage_report(report)
        if chart is not None and self._charts_dir is not None:
            stamp = report.taken_at.strftime("%Y%m%d-%H%M%S")
            path = self._charts_dir / f"usage-weekly-{stamp}.png"
            await asyncio.to_thread(write_file, path, chart)
            text = f"{text}\n{messages.chart_saved(str(path))}"
        self._stdout.write(plain(text) + "\n")
        self._stdout.flush()

    async def fill_warning(self, channel: str, forecasts: Sequence[Forecast], today: date) -> None:
        self._stdout.write(plain(messages.fill_warning(tuple(forecasts), today)) + "\n")
        self._stdout.flush()

    async def drills_overdue(
        self, channel: str, statuses: Sequence[DrillStatus], now: datetime
    ) -> None:
        text = messages.drills_overdue(statuses, now)
        if text is not None:
            self._stdout.write(plain(text) + "\n")
            self._stdout.flush()


async def run_console(core: Core, *, with_scheduler: bool = False) -> int:
    """Print the banner and serve stdin; with the scheduler, schedules run meanwhile."""
    # Bytes that are not UTF-8 (a terminal in Latin-1, a binary pasted into a pipe) must not end
    # the loop with a UnicodeDecodeError: they arrive as lone surrogates, which the grammar
    # refuses by name. Output that cannot be encoded is replaced rather than raised.
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    if core.fallback_reason:
        print(messages.fallback_banner(core.fallback_reason, core.libvirt_uri), flush=True)
    else:
        print(messages.connected_banner(core.libvirt_uri), flush=True)

    async def tell(operations: Sequence[Operation]) -> None:
        print(messages.reconciled_text(operations), flush=True)

    await core.watch.on_reconciled(tell)
    # Without with_scheduler the timetable does not run here, but `schedule run` still can.
    scheduler = build_scheduler(
        core, ConsoleReporter(sys.stdout, core.settings.data_dir / "charts")
    )
    if with_scheduler:
        await scheduler.start()
    try:
        return await Console(core, sys.stdin, sys.stdout, scheduler).run()
    finally:
        if with_scheduler:
            await scheduler.stop()
