"""``make test`` runs every benchmark briefly (``python -m bench --smoke``): each must run to its
end and record its figures, the command that reproduces them and the machine. Never how fast:
a benchmark is not a timed test. The committed full results in bench/results are not touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"overhead", "backups", "responsiveness", "fleet", "retention"}


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))}


def test_every_benchmark_runs_briefly_and_records_its_figures(tmp_path: Path) -> None:
    committed = fingerprint(ROOT / "bench" / "results")
    readme = (ROOT / "bench" / "README.md").read_bytes()
    out = tmp_path / "results"
    # The tests' own libvirtd (this run's, named by the environment daemon.py set) and guest.
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env={"SNAPBOT_GUEST_DIR": str(ROOT / ".build" / "guest"), **os.environ},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert {p.stem for p in out.glob("*.json")} == GROUPS
    for path in out.glob("*.json"):
        record = json.loads(path.read_text())
        assert record["smoke"] is True
        assert record["command"].endswith(f"--only {record['name']} --smoke")
        assert record["figures"], f"{path.name} recorded no figure"
        for figure in record["figures"]:
            assert isinstance(figure["value"], float | int), figure
            assert figure["unit"], figure
        machine = record["machine"]
        assert machine["cpu_count"] >= 1
        assert machine["qemu"].startswith("QEMU emulator version"), machine
        assert len(machine["git_commit"]) == 40
        assert len(machine["load_average_start"]) == 3
        if record["name"] != "retention":
            assert machine["libvirtd"].count(".") == 2, machine
    assert fingerprint(ROOT / "bench" / "results") == committed
    assert (ROOT / "bench" / "README.md").read_bytes() == readme
