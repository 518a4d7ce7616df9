"""What every benchmark records: its figures, the command that reproduces them, and the machine
they were measured on (a figure without its machine and load is not comparable to another).

A result file is ``<out>/<name>.json``::

    {"name": ..., "title": ..., "command": "...", "smoke": false, "seconds": 12.3,
     "machine": {...}, "figures": [{"figure", "value", "unit", "reference", "target", "met",
     "note"}], "details": {...}}
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SMOKE_RESULTS = ROOT / ".build" / "bench-smoke"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1): a value that was measured, never an interpolation."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n * q), at least 1
    return ordered[min(len(ordered), int(rank)) - 1]


def spread(values: list[float], scale: float = 1.0) -> dict[str, float]:
    """median, p90, p99, min, max of ``values`` times ``scale`` (1000: seconds to ms)."""
    return {
        "n": len(values),
        "median": statistics.median(values) * scale,
        "p90": percentile(values, 0.9) * scale,
        "p99": percentile(values, 0.99) * scale,
        "min": min(values) * scale,
        "max": max(values) * scale,
    }


def _run(*cmd: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.stdout or out.stderr else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def _libvirt_versions(uri: str | None) -> dict[str, str]:
    import libvirt

    def dotted(v: int) -> str:
        return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"

    found = {"libvirt_python": dotted(libvirt.getVersion())}
    if uri is not None:
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            return found
        try:
            found["libvirtd"] = dotted(conn.getLibVersion())
        finally:
            conn.close()
    return found


def machine_facts(uri: str | None = None) -> dict[str, Any]:
    """CPU, memory, versions and the commit the figures were measured at."""
    commit = _run("git", "-C", str(ROOT), "rev-parse", "HEAD")
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **_libvirt_versions(uri),
        "qemu": _run("qemu-system-x86_64", "--version"),
        "qemu_img": _run("qemu-img", "--version"),
        "git_commit": commit,
        # Others work in the same tree: say whether files differed from the commit.
        "git_tree_modified": bool(dirty),
    }


@dataclass
class Figure:
    figure: str
    value: float
    unit: str
    reference: str | None = None
    target: str | None = None
    met: bool | None = None
    note: str | None = None


@dataclass
class Recorder:
    """Collects one benchmark's figures and writes them with the facts of the run."""

    name: str
    title: str
    smoke: bool
    out_dir: Path
    uri: str | None = None
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    load_start: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def figure(
        self,
        figure: str,
        value: float,
        unit: str,
        *,
        reference: str | None = None,
        target: str | None = None,
        met: bool | None = None,
        note: str | None = None,
    ) -> None:
        self.figures.append(Figure(figure, value, unit, reference, target, met, note))
        judged = "" if met is None else ("  [met]" if met else "  [MISSED]")
        ref = f"  (ref: {reference})" if reference else ""
        print(f"  {figure:<58} {value:>12.3f} {unit}{ref}{judged}", flush=True)

    def write(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        argv = [Path(sys.executable).name if a == sys.executable else a for a in sys.argv]
        record = {
            "name": self.name,
            "title": self.title,
            "smoke": self.smoke,
            "command": "cd <checkout> && .venv/bin/python -m bench "
            + shlex.join(["--only", self.name, *(["--smoke"] if self.smoke else [])]),
            "argv": argv,
            "started_at": self.started_at,
            "seconds": round(time.monotonic() - self.started, 1),
            "machine": {
                **machine_facts(self.uri),
                "load_average_start": [round(x, 2) for x in self.load_start],
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
            },
            "figures": [asdict(f) for f in self.figures],
            "details": self.details,
        }
        path = self.out_dir / f"{self.name}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path


class LagProbe:
    """Sleeps ``interval`` in a loop and records how much later than asked it woke up: the
    event loop's lag, which every blocking call left on the loop shows up in."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(loop.time() - start - self.interval)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), MiB, from /proc."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/<pid>/status")
