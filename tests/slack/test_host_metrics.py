"""``/metrics`` over several hosts: one ``snapbot_host_up`` per configured host, an alias left
out (it is the same hypervisor as a host already reported)."""

from __future__ import annotations

from pathlib import Path

from bot.metrics import Metrics
from core.catalogue.store import TortoiseCatalogue
from core.domain.hosts import HostConfig
from core.errors import HypervisorUnavailable
from tests.fakes.hypervisor import FakeHypervisor
from tests.slack.test_metrics import parse, value
from tests.unit.test_hosts import HV1_UUID, fleet_core, fleet_watch, two_hosts


async def test_each_host_has_its_up_gauge_and_a_host_down_reads_zero(
    tmp_path: Path, catalogue: TortoiseCatalogue
) -> None:
    hv1, hv2, hosts = two_hosts()
    again = FakeHypervisor(host_uuid=HV1_UUID, uri="qemu+ssh://root@10.0.0.1/system")
    again.vms = hv1.vms
    hosts.append((HostConfig("hv1-ip", again.uri), again))
    hv2.down = HypervisorUnavailable("Connection refused")
    core = fleet_core(tmp_path, catalogue, hosts)
    await fleet_watch(core).connect_once()
    metrics = Metrics()
    metrics.bind(core)
    samples = parse((await metrics.page()).decode())
    assert value(samples, "snapbot_host_up", host="hv1", uri=hv1.uri) == 1
    assert value(samples, "snapbot_host_up", host="hv2", uri=hv2.uri) == 0
    assert value(samples, "snapbot_host_up", host="hv1-ip", uri=again.uri) is None
    assert value(samples, "snapbot_hypervisor_reachable", host=hv2.uri) == 0

    hv2.down = None
    await fleet_watch(core).connect_once()
    samples = parse((await metrics.page()).decode())
    assert value(samples, "snapbot_host_up", host="hv2", uri=hv2.uri) == 1
