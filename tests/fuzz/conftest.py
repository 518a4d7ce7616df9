"""The Slack front end over the fake hypervisor, for the Slack fuzzers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.bootstrap import Core
from tests.fakes.slack import FakeSlack
from tests.slack.harness import SlackBot, running_bot


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def bot(core: Core, slack: FakeSlack) -> AsyncIterator[SlackBot]:
    async with running_bot(core, slack) as running:
        yield running
