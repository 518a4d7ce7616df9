"""snapbot started with several ``[[hosts]]`` over real libvirt connections: one host is
libvirt's test driver, the other a daemon that is not there."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.bootstrap import build_core
from core.domain.hosts import HostConfig
from core.errors import HypervisorUnavailable
from tests.conftest import ALICE
from tests.contract.test_bootstrap import settings, unreachable


async def test_a_host_that_is_not_there_leaves_the_other_host_working(tmp_path: Path) -> None:
    gone = unreachable(tmp_path)
    hosts = (HostConfig("demo", "test:///default"), HostConfig("gone", gone, 1))
    configured = replace(settings(tmp_path, "test:///default", explicit=True), hosts=hosts)
    async with build_core(configured) as core:
        assert core.fallback_reason is None
        assert [(s.vm.host, s.vm.name) for s in await core.snapshots.list_vms()] == [
            ("demo", "test")
        ]
        (down,) = core.watch.unreachable()
        assert (down.name, down.uri) == ("gone", gone)
        assert down.last_error
        health = {h.name: h for h in core.watch.health()}
        assert health["demo"].reachable
        assert health["demo"].host_uuid
        assert health["gone"].max_operations == 1
        with pytest.raises(HypervisorUnavailable, match="host gone"):
            await core.snapshots.create_snapshot("gone/web-01", "x", actor=ALICE)
        vm = await core.snapshots.vm("demo/test")
        assert (vm.host, vm.name) == ("demo", "test")
        readings = await core.status.readings()
        assert [(h.name, h.reachable) for h in readings.hosts] == [("demo", True), ("gone", False)]
