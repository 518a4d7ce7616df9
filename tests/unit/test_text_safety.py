"""Text reads the same everywhere: decoded once at the Slack edge, escaped on every way out, and
labels that look alike cannot name two snapshots of one VM."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import messages
from bot.console import Console
from bot.mrkdwn import decode_slack, literal, plain
from core.bootstrap import Core
from core.domain.names import confusable_key, lookalike
from core.domain.snapshot import DESCRIPTION_MAX_LENGTH, label_for_external, validate_description
from core.errors import InvalidInput, LabelTaken
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.fakes.slack import FakeSlack
from tests.slack.harness import ADMIN, CHANNEL, running_bot


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


_TOKEN = re.compile(r"<!date\^00000000\^\{_\}\|[*_~`]>")


def slack_markup(mrkdwn: str) -> list[str]:
    """What Slack would treat as markup in ``mrkdwn``, apart from snapbot's own escape tokens:
    any <…> (mentions, links), a backtick, and a *, _ or ~ at a word edge."""
    text = _TOKEN.sub("x", mrkdwn)
    found = re.findall(r"<[^>]*>?|`", text)
    for i, char in enumerate(text):
        if char in "*_~":
            before = text[i - 1] if i else " "
            after = text[i + 1] if i + 1 < len(text) else " "
            if not (before.isalnum() and after.isalnum()):
                found.append(char)
    return found


_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _displayable(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI for c in text)


@given(st.text())
def test_literal_text_is_never_markup(text: str) -> None:
    assert slack_markup(literal(text)) == []


@given(st.text().filter(_displayable))
def test_the_console_shows_literal_text_exactly_as_typed(text: str) -> None:
    assert plain(literal(text)) == text


@pytest.mark.parametrize(
    ("sent", "typed"),
    [
        ("&lt;!channel&gt;", "<!channel>"),
        ("a &amp; b", "a & b"),
        ("&amp;lt;", "&lt;"),  # someone typed the entity itself: decoded once, not twice
        ("&amp;amp;", "&amp;"),
        ("&copy; &#60;", "&copy; &#60;"),  # Slack escapes only &, < and >
    ],
)
def test_slack_text_is_decoded_once(sent: str, typed: str) -> None:
    assert decode_slack(sent) == typed


def test_control_characters_from_libvirt_never_reach_a_terminal() -> None:
    shown = plain(literal("evil\x1b[2J\u202egnp.exe\nsecond line"))
    assert "\x1b" not in shown
    assert "\u202e" not in shown
    assert "\n" not in shown


# --- end to end: one label, every surface -----------------------------------------------------


async def console(core: Core, script: str) -> str:
    out = io.StringIO()
    await Console(core, io.StringIO(script), out).run()
    return out.getvalue()


async def test_a_mention_label_from_the_console_is_plain_text_in_slack_and_the_console(
    core: Core, services: Services, slack: FakeSlack
) -> None:
    out = await console(
        core, "/snapshot web-01 <!channel> --desc '*all* <https://x|click> _now_'\n"
    )
    assert "Snapshot `<!channel>` of web-01 taken" in out, "the console shows it as typed"
    listing = await console(core, "/snapshot list web-01\n")
    assert "<!channel>" in listing
    assert "*all* <https://x|click> _now_" in listing

    async with running_bot(core, slack) as bot:
        answer = await bot.command("/snapshot list web-01", user=ADMIN)
        (reply,) = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
        assert reply.text is not None
        assert "&lt;!channel&gt;" in reply.text
        assert "<!channel>" not in reply.text
        assert "<https://x|click>" not in reply.text

        status, _, _ = await bot.signed(req.app_home_opened_event_body(ADMIN))
        assert status == 200
        home = await bot.slack.wait_until(lambda: bot.slack.home_views.get(ADMIN))
        home_text = str(home["blocks"])
        assert "&lt;!channel&gt;" in home_text
        assert "<!channel>" not in home_text


async def test_a_label_typed_in_slack_is_stored_as_typed(
    core: Core, services: Services, slack: FakeSlack
) -> None:
    async with running_bot(core, slack) as bot:
        # Slack sends what the person typed, <b>&c, with & < > as entities.
        answer = await bot.command("/snapshot web-01 &lt;b&gt;&amp;c", user=ADMIN)
        assert answer.status == 200
        final = await bot.slack.wait_for_message(
            lambda m: m.text.startswith("✅"), channel=CHANNEL, timeout=15
        )
        await bot.idle()
    (snap,) = await services.catalogue.snapshots()
    assert snap.label == "<b>&c"
    assert "`&lt;b&gt;&amp;c`" in final.text
    assert "  <b>&c " in await console(core, "/snapshot list web-01\n")


def test_formatting_in_a_label_does_not_format_any_message() -> None:
    for label in ("*bold*", "_it_", "~gone~", "`code`", "a*b*", "```", "<@U1>"):
        title = messages.operation_title("Snapshot", "web-01", label)
        prefix = "*Snapshot* web-01 `"
        assert title.startswith(prefix)
        assert title.endswith("`")
        assert slack_markup(title[len(prefix) : -1]) == [], label
        assert plain(title) == f"*Snapshot* web-01 `{label}`"
    # an underscore between letters formats nothing, so it stays as typed
    assert literal("before_upgrade") == "before_upgrade"


# --- descriptions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("line one\nline two", "a line break; write it on one line"),
        ("bell\x07", "the control character U+0007"),
        ("esc\x1b[31m", "the control character U+001B"),
        ("broken \ud800 half", "a lone UTF-16 surrogate U+D800"),
        ("right\u202eto-left", "invisible direction control U+202E"),
        ("x" * (DESCRIPTION_MAX_LENGTH + 1), "the limit is 500"),
    ],
)
async def test_bad_descriptions_are_refused_with_the_reason(
    core: Core, services: Services, description: str, problem: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_description(description)
    assert problem in str(info.value)
    with pytest.raises(InvalidInput):
        await services.service.create_snapshot(
            "web-01", "pre", actor=ALICE, description=description
        )
    assert await services.catalogue.snapshots() == [], "nothing was taken"


def test_good_descriptions_pass() -> None:
    assert validate_description("Before PG 15 👨‍👩‍👧 — ok") == "Before PG 15 👨‍👩‍👧 — ok"
    assert validate_description("x" * DESCRIPTION_MAX_LENGTH) == "x" * DESCRIPTION_MAX_LENGTH


# --- look-alike labels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        "bеfore",  # Cyrillic е
        "ｂｅｆｏｒｅ",  # fullwidth
        "BEFORE",
        "bеfοre",  # Cyrillic е, Greek ο
        "befоre",  # Cyrillic о
    ],
)
def test_look_alikes_share_a_key(other: str) -> None:
    assert confusable_key(other) == confusable_key("before")
    assert lookalike(other, ["after", "before"]) == "before"


def test_different_labels_keep_different_keys() -> None:
    assert confusable_key("before-1") != confusable_key("before-2")
    assert lookalike("after", ["before"]) is None


async def test_a_look_alike_label_is_refused_naming_the_existing_one(
    services: Services,
) -> None:
    await services.service.create_snapshot("web-01", "before", actor=ALICE)
    with pytest.raises(LabelTaken) as info:
        await services.service.create_snapshot("web-01", "bеfore", actor=ALICE)
    text = messages.error_text(info.value)
    assert "already has a snapshot named `before`, which looks the same as `bеfore`" in text
    await services.service.create_snapshot("web-02", "bеfore", actor=ALICE)  # another VM: fine
    await services.service.create_snapshot("web-01", "after", actor=ALICE)
    with pytest.raises(LabelTaken):
        await services.service.rename_snapshot("web-01", "after", "ＢＥＦＯＲＥ", actor=ALICE)
    renamed = await services.service.rename_snapshot("web-01", "after", "After", actor=ALICE)
    assert renamed.new_label == "After", "its own look-alike is not a clash"
    labels = sorted(
        s.label for s in await services.catalogue.snapshots("11111111-1111-1111-1111-111111111111")
    )
    assert labels == ["After", "before"]


async def test_a_virsh_snapshot_with_a_look_alike_name_gets_a_distinct_label(
    services: Services,
) -> None:
    await services.service.create_snapshot("web-01", "before", actor=ALICE)
    vm = await services.hv.get_vm("web-01")
    await services.hv.create_snapshot(vm, "bеfore", "")  # made with virsh
    (group,) = await services.service.list_snapshots("web-01")
    labels = sorted(s.label for s in group.snapshots)
    assert labels == ["before", "bеfore~2"]
    assert label_for_external("ｂｅｆｏｒｅ", {"before"}) != "ｂｅｆｏｒｅ"


async def test_a_virsh_snapshot_named_like_a_mention_is_plain_text_in_slack(
    core: Core, services: Services, slack: FakeSlack
) -> None:
    vm = await services.hv.get_vm("web-01")
    await services.hv.create_snapshot(vm, "<!here>", "made by hand")  # virsh snapshot-create-as
    async with running_bot(core, slack) as bot:
        answer = await bot.command("/snapshot list web-01", user=ADMIN)
        (reply,) = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
        assert reply.text is not None
        assert "&lt;!here&gt;" in reply.text
        assert "<!here>" not in reply.text
    assert "  <!here> " in await console(core, "/snapshot list web-01\n")
