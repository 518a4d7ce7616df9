"""Several hosts in Slack, through the real bolt app over HTTP: the Home tab names each VM with
its host and says which host is down, a name two hosts share is answered with the names to
type, and hv1/web-01 works as a VM's name; a grant limited to a host shows only its VMs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.catalogue.store import TortoiseCatalogue
from core.domain.operation import Actor
from core.errors import HypervisorUnavailable
from tests.fakes import slack_requests as req
from tests.fakes.fleet import WEB_ON_2, TwoHosts
from tests.fakes.slack import FakeSlack
from tests.slack.harness import ADMIN, SlackBot, running_bot

ALICE = Actor(user="U_ALICE", via="test")
HV1_VIEWER = "U_HV1_VIEWER"
GRANTS: list[dict[str, object]] = [{"role": "viewer", "users": [HV1_VIEWER], "hosts": ["hv1"]}]


@pytest.fixture
async def hosts(tmp_path: Path, catalogue: TortoiseCatalogue) -> TwoHosts:
    two = TwoHosts(tmp_path, catalogue)
    assert await two.connect()
    await two.core.snapshots.create_snapshot("hv1/web-01", "on-one", actor=ALICE)
    await two.core.snapshots.create_snapshot("hv2/web-01", "on-two", actor=ALICE)
    return two


@pytest.fixture
async def fleet_bot(hosts: TwoHosts, slack: FakeSlack) -> AsyncIterator[SlackBot]:
    async with running_bot(hosts.core, slack, grants=GRANTS) as running:
        yield running


async def said(bot: SlackBot, line: str, user: str = ADMIN) -> str:
    answer = await bot.command(line, user=user)
    assert answer.status == 200
    await bot.idle()
    return "\n".join(
        [answer.text, *(p.text or "" for p in bot.slack.responses(answer.response_url))]
    )


async def test_the_home_tab_names_vms_with_their_host_and_the_host_that_is_down(
    fleet_bot: SlackBot, hosts: TwoHosts
) -> None:
    hosts.hv2.down = HypervisorUnavailable("Cannot recv data: Connection reset by peer")
    await fleet_bot.signed(req.app_home_opened_event_body(ADMIN))
    home = await fleet_bot.slack.wait_until(lambda: fleet_bot.slack.home_views.get(ADMIN))
    text = str(home["blocks"])
    assert "*hv1/web-01* (running)" in text
    assert "`on-one`" in text
    assert "• hv1: 2 VM(s)" in text
    assert "Host *hv2* (qemu+tls://hv2/system) is unreachable since" in text
    assert "Connection reset by peer" in text

    # a viewer of hv1 only sees hv1's VMs
    await fleet_bot.signed(req.app_home_opened_event_body(HV1_VIEWER))
    mine = await fleet_bot.slack.wait_until(lambda: fleet_bot.slack.home_views.get(HV1_VIEWER))
    assert "hv1/web-01" in str(mine["blocks"])
    assert "hv2/web-01" not in str(mine["blocks"])


async def test_a_shared_name_is_answered_with_the_candidates_and_host_slash_vm_works(
    fleet_bot: SlackBot, hosts: TwoHosts
) -> None:
    before = (len(hosts.hv1.calls), len(hosts.hv2.calls))
    answer = await said(fleet_bot, "/snapshot web-01 again")
    assert "Several hosts have a VM named `web-01`: `hv1/web-01`, `hv2/web-01`" in answer
    assert (len(hosts.hv1.calls), len(hosts.hv2.calls)) == before
    await said(fleet_bot, "/snapshot hv2/web-01 again")
    assert hosts.hv2.calls[-1] == ("create_snapshot", WEB_ON_2.uuid)

    listing = await said(fleet_bot, "/snapshot list", user=HV1_VIEWER)
    assert "on-one" in listing
    assert "on-two" not in listing
    hosts.hv2.down = HypervisorUnavailable("Connection refused")
    vms = await said(fleet_bot, "/snapshot vms")
    assert "Host *hv1* (qemu+ssh://root@hv1/system): 2 VM(s)" in vms
    assert "Host *hv2* (qemu+tls://hv2/system) is unreachable since" in vms


async def test_the_home_tab_with_every_host_down_names_each_host(
    fleet_bot: SlackBot, hosts: TwoHosts
) -> None:
    for hv in (hosts.hv1, hosts.hv2):
        hv.down = HypervisorUnavailable("Connection refused")
    # a call finds both gone: each is marked unreachable
    with pytest.raises(HypervisorUnavailable, match="no hypervisor host answers"):
        await hosts.core.snapshots.list_vms()
    await fleet_bot.signed(req.app_home_opened_event_body(ADMIN))
    home = await fleet_bot.slack.wait_until(lambda: fleet_bot.slack.home_views.get(ADMIN))
    text = str(home["blocks"])
    assert "Host *hv1* (qemu+ssh://root@hv1/system) is unreachable since" in text
    assert "Host *hv2* (qemu+tls://hv2/system) is unreachable since" in text
    assert "You have no role" not in text
