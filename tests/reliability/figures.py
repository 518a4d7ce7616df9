"""Figures the fault, race, fuzz and security checks report for `make reliability`'s table.

A check calls ``record`` once with what it did and the number it proves. Outside
`make reliability` (no ``SNAPBOT_RELIABILITY_LOG``) nothing is written, so the same tests run
in `make test` unchanged. One JSON object per line: lines from parallel or repeated runs append.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LOG_ENV = "SNAPBOT_RELIABILITY_LOG"


def record(check: str, did: str, figure: str, *, lost: int = 0, passed: bool = True) -> None:
    """Report one check: ``check`` names it, ``did`` says what it did ("SIGKILL at 6 stages of
    create"), ``figure`` is its count ("6 faults injected, 6 survived"), ``lost`` is the number
    of operations lost (accepted requests without exactly one final record and reply)."""
    target = os.environ.get(LOG_ENV)
    if not target:
        return
    line = json.dumps(
        {"check": check, "did": did, "figure": figure, "lost": lost, "passed": passed}
    )
    with Path(target).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
