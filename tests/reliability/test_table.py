"""`make reliability`'s table: a check that failed, or that recorded nothing, shows as a failure."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tests.reliability import figures

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reliability_table.py"


@pytest.fixture(scope="module")
def table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reliability_table", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _sources(tmp_path: Path) -> Path:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        textwrap.dedent(
            """
            from tests.reliability.figures import record

            def test_one():
                record("Race", "50 requests", "max in flight 1")

            def test_two(backend):
                record(f"Upgrade ({backend})", "rows", "0 lost")

            def test_three():
                record("Never runs", "x", "y")
            """
        )
    )
    return tests


def test_recorded_failed_and_silent_checks_all_show(
    table: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "figures.jsonl"
    monkeypatch.setenv(figures.LOG_ENV, str(log))
    # Names in variables: a literal name here would be an expected check of the real run.
    race, sqlite, postgres = "Race", "Upgrade (sqlite)", "Upgrade (postgres)"
    figures.record(race, "50 requests", "max in flight 1")
    figures.record(sqlite, "rows", "0 lost")
    figures.record(postgres, "rows", "2 lost", lost=2, passed=False)
    figures.record(race, "50 requests", "max in flight 1")  # a repeat: shown once
    out = tmp_path / "docs" / "reliability.md"

    status = table.main([str(log), "--tests", str(_sources(tmp_path)), "--write", str(out)])

    assert status == 1
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| Race | 50 requests | max in flight 1 | 0 | pass |",
        "| Upgrade (sqlite) | rows | 0 lost | 0 | pass |",
        "| Upgrade (postgres) | rows | 2 lost | 2 | **FAIL** |",
        f"| Never runs | recorded nothing (expected from {tmp_path}/tests/test_a.py:11) | — | — "
        "| **FAIL** |",
    ]
    assert "4 checks: 2 passed, 2 failed; 2 operations lost." in text


def test_a_clean_run_passes_and_an_empty_one_does_not(
    table: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_b.py").write_text('record("Only", "did", "fig")\n')
    log = tmp_path / "figures.jsonl"
    assert table.main([str(log), "--tests", str(tests)]) == 1, "nothing recorded"
    log.write_text(json.dumps({"check": "Only", "did": "a | b", "figure": "1", "passed": True}))
    assert table.main([str(log), "--tests", str(tests)]) == 0
    assert table.main([str(log), "--tests", str(tests), "--pytest-status", "1"]) == 1
    log.write_text("not json\n")
    assert table.main([str(log), "--tests", str(tests)]) == 1
