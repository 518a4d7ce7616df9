"""Two bot processes on one PostgreSQL database: each scheduled slot runs once, and when the
leader is killed the other process takes over, reporting what fell in the gap."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.catalogue.db import open_database
from core.catalogue.models import OperationRow
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.domain.schedule import Schedule, parse_when
from scheduler.timing import fire_times

pytestmark = pytest.mark.system

NODE_XML = Path(__file__).resolve().parents[1] / "contract" / "data" / "node.xml"
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
RUN_SECONDS = 9.0


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    url = os.environ.get("SNAPBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("SNAPBOT_TEST_POSTGRES_URL is unset; run the system tests with `make test`")
    name = f"snapbot_replicas_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url, timeout=5)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def worker(url: str, node: Path, epoch: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.system.replica_worker",
            url,
            f"test://{node}",
            T0.isoformat(),
            str(epoch),
            str(RUN_SECONDS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.reliability  # a crash and a restart: `make reliability`
async def test_two_processes_run_each_slot_once_and_survive_the_leaders_death(
    postgres_url: str, tmp_path: Path
) -> None:
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    EXECUTOR_CACHE.clear()  # this process's other tests used SQLite
    when = parse_when(["cron", "*/10 * * * *"], "UTC")
    async with open_database(postgres_url):
        await TortoiseCatalogue(SystemClock()).add_schedule(
            Schedule(0, "tenmin", "web-01", when, None, None, "U_OWNER", T0)
        )
    EXECUTOR_CACHE.clear()

    nodes = []
    for n in range(2):
        node = tmp_path / f"node-{n}.xml"
        shutil.copy(NODE_XML, node)
        nodes.append(node)
    epoch = time.time() + 1.5  # both start their simulated clocks at the same moment
    procs = [worker(postgres_url, nodes[n], epoch) for n in range(2)]
    await asyncio.sleep(1.5 + RUN_SECONDS / 2)
    # kill whichever leads now; the other must take over
    leader = None
    async with open_database(postgres_url):
        from core.catalogue.models import LeaseRow

        lease = await LeaseRow.get(name="scheduler")
        leader = next(p for p in procs if f":{p.pid}:" in lease.holder)
    EXECUTOR_CACHE.clear()
    killed_at = time.time()
    leader.send_signal(signal.SIGKILL)
    outputs = {}
    for p in procs:
        out, err = p.communicate(timeout=60)
        outputs[p.pid] = (out, err)
        if p is not leader:
            assert p.returncode == 0, err[-2000:]

    survivor = next(p for p in procs if p is not leader)
    survivor_events = events(outputs[survivor.pid][0])
    took_over = [e for e in survivor_events if e["event"] == "leader"]
    assert took_over, outputs[survivor.pid]
    leader_events = events(outputs[leader.pid][0])

    reports = [e for e in leader_events + survivor_events if e["event"] == "report"]
    ran = [str(e["fire_time"]) for e in reports if e["fire_time"]]
    assert len(ran) == len(set(ran)), f"a slot ran twice: {Counter(ran).most_common(3)}"
    missed = {str(m) for e in reports for m in e["missed"]}  # type: ignore[union-attr]

    async with open_database(postgres_url):
        ops = await OperationRow.filter(kind="snapshot", status="succeeded").values_list(
            "snapshot_label", flat=True
        )
    EXECUTOR_CACHE.clear()
    assert len(ops) == len(set(ops)), "each slot's snapshot was taken once"
    assert len(ops) == len(ran)

    # every slot of the simulated span is accounted for: run, or reported missed
    span_end = T0 + timedelta(seconds=(time.time() - epoch) * 600)
    slots = [t.isoformat() for t in fire_times(when, T0, span_end)]
    last_handled = max(ran + sorted(missed))
    unaccounted = [s for s in slots if s <= last_handled and s not in ran and s not in missed]
    assert not unaccounted, unaccounted
    # the takeover came within the lease (2 s) plus one renewal period (and start-up noise)
    takeover = [float(e["at"]) for e in took_over if float(e["at"]) > killed_at]  # type: ignore[arg-type]
    assert takeover, "the survivor took the lease after the leader died"
    assert takeover[0] - killed_at < 4.0, takeover[0] - killed_at
    assert len(ran) >= 3
    after = [
        e
        for e in survivor_events
        if e["event"] == "report" and e["fire_time"] and float(e["at"]) > killed_at  # type: ignore[arg-type]
    ]
    assert after, "the survivor ran slots after the takeover"
    print(f"ran {len(ran)} slots, reported {len(missed)} missed")
