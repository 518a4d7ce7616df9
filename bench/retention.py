"""5. Retention planning: ``plan_retention`` over 10^3 to 10^6 snapshots of one VM, time and
peak memory, against the engine as it was before it was made fast (kept verbatim in
tests/unit/retention_reference.py) on the same input in the same run.

The input is a VM snapshotted every 5 minutes (10^6 snapshots: about 9.5 years), one in 13
manual, one in 101 a safety snapshot, one in 997 held, planned with a policy using every rule
(last=3, hourly=24, daily=7, weekly=4, monthly=12, yearly=3) in Europe/Berlin (DST changes).
Time is the median of a few runs without tracing; peak memory is tracemalloc's peak during one
separate run (tracing slows the code, so it is never timed)."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.record import Recorder
from core.domain.retention import RetentionItem, RetentionPlan, RetentionPolicy, plan_retention
from tests.unit import retention_reference

NAME = "retention"
TITLE = "Retention planning"
NEEDS_LIBVIRTD = False
TARGET_S = 2.0
POLICY = RetentionPolicy.from_counts(last=3, hourly=24, daily=7, weekly=4, monthly=12, yearly=3)
TZ = ZoneInfo("Europe/Berlin")
Planner = Callable[[list[RetentionItem], RetentionPolicy, ZoneInfo], RetentionPlan]


def snapshots(n: int) -> list[RetentionItem]:
    start = datetime(2017, 1, 1, tzinfo=UTC)
    return [
        RetentionItem(
            f"sched-{i:07d}",
            start + timedelta(minutes=5 * i),
            held=i % 997 == 0,
            scheduled=i % 13 != 0,
            safety=i % 101 == 0,
        )
        for i in range(n)
    ]


def timed(plan: Planner, items: list[RetentionItem], runs: int) -> tuple[float, RetentionPlan]:
    times = []
    result = None
    for _ in range(runs):
        gc.collect()  # each run starts from the same heap, not after the last one's garbage
        start = time.perf_counter()
        result = plan(items, POLICY, TZ)
        times.append(time.perf_counter() - start)
        del result
    gc.collect()
    result = plan(items, POLICY, TZ)
    return statistics.median(times), result


def peak_mib(plan: Planner, items: list[RetentionItem]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        kept = plan(items, POLICY, TZ)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return peak / 2**20


async def run(rec: Recorder, smoke: bool) -> None:
    sizes = [10**3, 2 * 10**3] if smoke else [10**3, 10**4, 10**5, 10**6]
    # The old engine at 10^6 takes tens of seconds: once is enough to place it.
    rows = []
    for n in sizes:
        items = snapshots(n)
        runs = 3
        seconds, plan = timed(plan_retention, items, runs)
        before, old_plan = timed(retention_reference.plan_retention, items, 1)
        # The same decisions, or the comparison means nothing.
        if plan != old_plan:
            raise AssertionError(f"the fast plan differs from the reference at n={n}")
        peak = peak_mib(plan_retention, items)
        rows.append(
            {
                "snapshots": n,
                "seconds": seconds,
                "seconds_before": before,
                "peak_mib": peak,
                "kept": len(plan.keep),
                "deleted": len(plan.delete),
            }
        )
        label = f"10^{len(str(n)) - 1}" if str(n).strip("0") == "1" else f"{n:,}"
        is_top = n == 10**6
        rec.figure(
            f"plan {label} snapshots",
            seconds,
            "s",
            reference=f"previous engine {before:.2f} s",
            target=f"< {TARGET_S:.0f} s" if is_top else None,
            met=seconds < TARGET_S if is_top else None,
        )
        rec.figure(f"plan {label} snapshots: peak memory (tracemalloc)", peak, "MiB")
    # Growth: time per snapshot at each size (flat means linear).
    for row in rows:
        row["microseconds_per_snapshot"] = row["seconds"] / row["snapshots"] * 1e6
    rec.details["sizes"] = rows
    rec.details["policy"] = POLICY.describe()
    rec.details["time_zone"] = str(TZ)
