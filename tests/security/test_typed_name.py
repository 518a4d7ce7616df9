"""R19: the typed-name confirmation of a restore accepts the VM's name and nothing else.

Near-misses are drawn by Hypothesis: other case, a space or tab around it, a zero-width or
bidi control inside it, one character swapped for a look-alike (Cyrillic, fullwidth, dashes),
one character dropped or added, another VM's name. Each is typed into the real restore modal
over signed HTTP and at the console's prompt: none may restore, the modal says what to type,
the console cancels. The exact name restores; an expired confirmation restores nothing even
with the exact name.
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.console import Console
from bot.slack import blocks
from core.bootstrap import Core
from core.catalogue.models import ConfirmationRow
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.reliability.figures import record
from tests.slack.harness import ADMIN, SlackBot

NAME = "web-01"
EXAMPLES = int(os.environ.get("SNAPBOT_FUZZ_EXAMPLES", "40"))
LONG_EXAMPLES = int(os.environ.get("SNAPBOT_FUZZ_LONG_EXAMPLES", "1000"))

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
LOOKALIKES = {
    "w": "ԝѡｗ",
    "e": "еёｅ℮",
    "b": "Ьｂ",
    "-": "‐‑‒–—−－﹣",
    "0": "OoΟОｏ０〇",
    "1": "lIΙІ１",
}


@st.composite
def near_misses(draw: st.DrawFn, name: str = NAME) -> str:
    """Something a person could believe is ``name``, but is not its exact code points."""
    at = draw(st.integers(0, len(name)))
    kind = draw(st.sampled_from(["case", "space", "invisible", "lookalike", "edit", "other"]))
    if kind == "case":
        letters = [i for i, c in enumerate(name) if c.isalpha()]
        flip = draw(st.sets(st.sampled_from(letters), min_size=1))
        typed = "".join(c.swapcase() if i in flip else c for i, c in enumerate(name))
    elif kind == "space":
        pad = draw(st.sampled_from([" ", "\t", "\u00a0", "\u3000", "  "]))
        typed = draw(st.sampled_from([name + pad, pad + name, name[:at] + pad + name[at:]]))
    elif kind == "invisible":
        mark = draw(st.sampled_from(ZERO_WIDTH + BIDI))
        typed = name[:at] + mark + name[at:]
    elif kind == "lookalike":
        i = draw(st.sampled_from([i for i, c in enumerate(name) if c in LOOKALIKES]))
        typed = name[:i] + draw(st.sampled_from(LOOKALIKES[name[i]])) + name[i + 1 :]
    elif kind == "edit":
        typed = draw(
            st.sampled_from(
                [name[:-1], name[1:], name + "1", name[:at] + name[at + 1 :], name * 2, ""]
            )
        )
    else:
        typed = draw(st.sampled_from(["web-02", "db-01", "web-1", "web01", "web_01"]))
    return typed


# Always tried: each would pass a lenient comparison (strip, casefold, NFKC, dropping
# invisible characters) that the exact one must not be.
ALWAYS = [
    "WEB-01",
    "Web-01",
    "web-01 ",
    " web-01",
    "web-01\u200b",
    "w\u202eeb-01",
    "wеb-01",
    "ｗｅｂ－０１",
    "web\u201001",
]


def draw_near_misses(count: int) -> list[str]:
    drawn: list[str] = list(ALWAYS)

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(typed=near_misses())
    def collect(typed: str) -> None:
        if typed != NAME:
            drawn.append(typed)

    collect()
    return drawn


def _typed(value: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": value}}}


async def _modal(bot: SlackBot) -> dict[str, Any]:
    trigger = bot.slack.new_trigger_id(user_id=ADMIN)
    body = req.slash_command_body(
        "/restore",
        f"{NAME} golden",
        response_url=bot.slack.new_response_url(),
        trigger_id=trigger,
        user_id=ADMIN,
    )
    status, _, _ = await bot.signed(body)
    assert status == 200

    def filled() -> dict[str, Any] | None:
        for call in bot.slack.calls_to("views.open"):
            if call.params.get("trigger_id") == trigger and call.response is not None:
                view = bot.slack.views[call.response["view"]["id"]]
                if view.get("callback_id") == blocks.RESTORE_CALLBACK:
                    return view
        return None

    return await bot.slack.wait_until(filled, what="the restore modal")


def _reverts(services: Services) -> int:
    return sum(method == "revert_snapshot" for method, _ in services.hv.calls)


async def _console(core: Core, typed: str) -> str:
    out = io.StringIO()
    await Console(core, io.StringIO(typed + "\n"), out).handle(f"/restore {NAME} golden")
    return out.getvalue()


async def check_typed_names(
    bot: SlackBot, core: Core, services: Services, near: list[str]
) -> tuple[list[str], list[str]]:
    """Type every near-miss, then the exact name; return (false accepts, false rejects)."""
    await services.service.create_snapshot(NAME, "golden", actor=ALICE)
    false_accepts: list[str] = []
    view = await _modal(bot)
    for typed in near:
        before = _reverts(services)
        answer = await bot.submit(view, _typed(typed), user=ADMIN)
        refused = isinstance(answer, dict) and answer.get("response_action") == "errors"
        if not refused or _reverts(services) != before:
            false_accepts.append(f"modal: {typed!r} -> {answer!r}")
        await _console(core, typed)
        await bot.idle()
        if _reverts(services) != before:
            false_accepts.append(f"console: {typed!r} restored")

    false_rejects: list[str] = []
    before = _reverts(services)
    answer = await bot.submit(view, _typed(NAME), user=ADMIN)
    await bot.idle()
    if answer is not None or _reverts(services) != before + 1:
        false_rejects.append(f"modal: the exact name -> {answer!r}")
    out = await _console(core, NAME)
    if _reverts(services) != before + 2:
        false_rejects.append(f"console: the exact name -> {out!r}")
    return false_accepts, false_rejects


async def test_only_the_exact_name_restores(bot: SlackBot, core: Core, services: Services) -> None:
    near = draw_near_misses(EXAMPLES)
    false_accepts, false_rejects = await check_typed_names(bot, core, services, near)
    assert not false_accepts, "\n".join(false_accepts)
    assert not false_rejects, "\n".join(false_rejects)


@pytest.mark.reliability
async def test_only_the_exact_name_restores_long(
    bot: SlackBot, core: Core, services: Services
) -> None:
    near = draw_near_misses(LONG_EXAMPLES)
    false_accepts, false_rejects = await check_typed_names(bot, core, services, near)
    record(
        "Typed-name confirmation (R19)",
        "near-misses of the VM name (case, spaces, zero-width and bidi controls, look-alike "
        "letters, dashes and digits, one character off, other VMs) typed into the restore "
        "modal over signed HTTP and at the console prompt, then the exact name",
        f"{len(near)} near-misses × 2 front ends, {len(false_accepts)} false accepts, "
        f"{len(false_rejects)} false rejects of the exact name",
        passed=not false_accepts and not false_rejects,
    )
    assert not false_accepts, "\n".join(false_accepts)
    assert not false_rejects, "\n".join(false_rejects)


async def test_an_expired_confirmation_restores_nothing_even_with_the_exact_name(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot(NAME, "golden", actor=ALICE)
    view = await _modal(bot)
    confirmation_id = json.loads(view["private_metadata"])["id"]
    await ConfirmationRow.filter(id=confirmation_id).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    await bot.submit(view, _typed(NAME), user=ADMIN)
    await bot.idle()
    assert _reverts(services) == 0
    told = [p.text or "" for h in bot.slack.hooks for p in bot.slack.responses(h)]
    assert any("expired" in t for t in told), told
