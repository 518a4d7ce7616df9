"""Turn the figures `make reliability` collected into one Markdown table.

    python scripts/reliability_table.py LOG [--tests tests] [--write docs/reliability.md]
        [--pytest-status N] [--seconds S]

LOG holds one JSON object per line, written by ``tests.reliability.figures.record``. The checks
expected are read from the test sources: every ``record("<name>", ...)`` call names one (an
f-string name becomes a pattern). A check that is expected but recorded nothing is a failure
row, not a missing line: a suite that was skipped, crashed before its figure, or was left out
of the run must show. Exit status 1 if any row failed or pytest failed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Row:
    check: str
    did: str
    figure: str
    lost: int | None
    passed: bool


@dataclass(frozen=True)
class Expected:
    """A check named in the sources: ``pattern`` matches the names it records."""

    shown: str
    pattern: re.Pattern[str]
    where: str


def _name_pattern(node: ast.expr) -> tuple[str, str] | None:
    """``(shown, regex)`` for a literal or f-string check name; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        shown, regex = [], []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                shown.append(part.value)
                regex.append(re.escape(part.value))
            else:
                shown.append("{…}")
                regex.append(".+?")
        return "".join(shown), "".join(regex)
    return None


def expected_checks(tests: Path) -> list[Expected]:
    """Every check name passed to ``record(...)`` in the Python files under ``tests``."""
    found: dict[str, Expected] = {}
    for path in sorted(tests.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except SyntaxError as exc:
            raise SystemExit(f"cannot read {path}: {exc}") from exc
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "record":
                continue
            named = _name_pattern(node.args[0])
            if named is None:
                continue
            shown, regex = named
            found.setdefault(
                regex, Expected(shown, re.compile(f"^{regex}$"), f"{path}:{node.lineno}")
            )
    return list(found.values())


def read_log(path: Path) -> list[Row]:
    rows: list[Row] = []
    if not path.exists():
        return rows
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            rows.append(
                Row(
                    str(raw["check"]),
                    str(raw["did"]),
                    str(raw["figure"]),
                    int(raw.get("lost", 0)),
                    bool(raw["passed"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            rows.append(
                Row(f"(unreadable line {n} of {path.name})", line[:120], str(exc), None, False)
            )
    return rows


def table_rows(recorded: list[Row], expected: list[Expected]) -> list[Row]:
    """The recorded rows (exact repeats once), then a failure row per expected check that
    recorded nothing."""
    rows = list(dict.fromkeys(recorded))
    for want in expected:
        if not any(want.pattern.match(r.check) for r in recorded):
            rows.append(
                Row(
                    want.shown,
                    f"recorded nothing (expected from {want.where})",
                    "—",
                    None,
                    False,
                )
            )
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(rows: list[Row], *, pytest_status: int | None, seconds: float | None) -> str:
    failed = sum(not r.passed for r in rows)
    lost = sum(r.lost or 0 for r in rows)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    took = f", took {seconds / 60:.1f} min" if seconds is not None else ""
    lines = [
        "# Reliability report",
        "",
        f"`make reliability` on {when} ({os.cpu_count()} CPUs{took}): the fault, race, fuzz and "
        "security suites, long runs included. Each check reports what it did and the figure it "
        "proves; *Lost* counts accepted requests without exactly one final record and reply.",
        "",
        "| Check | What it did | Figure | Lost | Result |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {_cell(r.check)} | {_cell(r.did)} | {_cell(r.figure)} | "
            f"{'—' if r.lost is None else r.lost} | {'pass' if r.passed else '**FAIL**'} |"
        )
    status = "" if pytest_status is None else f" pytest exit status {pytest_status}."
    lines += [
        "",
        f"{len(rows)} checks: {len(rows) - failed} passed, {failed} failed; "
        f"{lost} operations lost.{status}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--tests", type=Path, default=Path("tests"))
    parser.add_argument("--write", type=Path)
    parser.add_argument("--pytest-status", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args(argv)
    rows = table_rows(read_log(args.log), expected_checks(args.tests))
    text = render(rows, pytest_status=args.pytest_status, seconds=args.seconds)
    print(text, end="")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    failed = any(not r.passed for r in rows) or bool(args.pytest_status)
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
