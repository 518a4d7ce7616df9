"""Hostile input at every Slack payload handler: the slash commands, the Confirm / Cancel and
Verified / Restore buttons, the restore modal's and the picker's submissions, the modal's close,
and the Home tab. Over signed HTTP, as Slack sends them.

The property: the front end never raises, Slack always gets its ack (HTTP 200 within Slack's
3 s, a view submission's ack a valid ``response_action``), and what the person sees is a normal
result or a clear refusal, never "something went wrong inside snapbot".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack import blocks, holds
from core.domain.confirmation import RestoreRequest
from core.domain.operation import Actor
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.fuzz.strategies import EXAMPLES, LONG_EXAMPLES, SLACK_MARKUP, command_line, hostile
from tests.reliability.figures import record
from tests.slack.harness import ADMIN, CHANNEL, NOBODY, OPERATOR, RESTORER, VIEWER, SlackBot

INTERNAL = "Something went wrong inside snapbot"
ACK_SECONDS = 3.0
USERS = st.one_of(
    st.sampled_from((ADMIN, OPERATOR, RESTORER, VIEWER, NOBODY)),
    hostile(),
)


@dataclass(frozen=True)
class Request:
    """One payload to send: ``kind`` names the handler, ``fields`` what varies."""

    kind: str
    fields: dict[str, Any]


@dataclass
class Tally:
    tried: int = 0
    crashes: list[str] = field(default_factory=list)


def _slack_encoded(text: str) -> str:
    """What Slack sends for typed text: &, < and > as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def slash_commands(draw: st.DrawFn) -> Request:
    line = draw(command_line(wire=True))
    command, _, text = line.partition(" ")
    # Typed text arrives entity-encoded; Slack's own mentions (should_escape) arrive raw.
    if draw(st.booleans()):
        text = _slack_encoded(text)
    if draw(st.booleans()):
        text = f"{text} {draw(st.sampled_from(SLACK_MARKUP))}"
    return Request("command", {"command": command, "text": text, "user": draw(USERS)})


@st.composite
def button_clicks(draw: st.DrawFn) -> Request:
    action = draw(
        st.sampled_from(
            (
                blocks.CONFIRM_ACTION,
                blocks.CANCEL_ACTION,
                holds.VERIFIED_ACTION,
                holds.RESTORE_ACTION,
            )
        )
    )
    # JSON can carry lone surrogates (a form-encoded slash command cannot).
    value = draw(
        st.one_of(
            hostile(wire=False),
            st.builds(lambda vm, label: f"{vm}\n{label}", hostile(wire=False), hostile()),
            st.just("REAL"),  # replaced by a live confirmation id when sent
        )
    )
    return Request("click", {"action": action, "value": value, "user": draw(USERS)})


def _json_or_text(draw: st.DrawFn) -> str:
    meta = draw(
        st.one_of(
            st.dictionaries(
                st.sampled_from(("id", "vm", "channel", "response_url", "team", "safety", "x")),
                st.one_of(hostile(wire=False), st.integers(), st.none(), st.lists(st.integers())),
            ).map(json.dumps),
            hostile(),
            st.just('"a string"'),
            st.just("[1, 2]"),
            st.just("null"),
            st.just("REAL"),  # a live confirmation's metadata
        )
    )
    return str(meta)[:3000]


@st.composite
def view_payloads(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from(("restore_submit", "pick_submit", "restore_closed")))
    fields: dict[str, Any] = {
        "metadata": _json_or_text(draw),
        "typed": draw(st.one_of(hostile(wire=False), st.just("web-01"), st.none())),
        "safety": draw(st.sampled_from(([], [blocks.SAFETY_VALUE], ["x", blocks.SAFETY_VALUE]))),
        "picked": draw(st.one_of(hostile(wire=False), st.just("before"), st.none())),
        "user": draw(USERS),
        # A payload with missing pieces, as a proxy or a future Slack version might send.
        "drop": draw(st.sampled_from((None, "state", "values", "view_id"))),
    }
    return Request(kind, fields)


@st.composite
def home_events(draw: st.DrawFn) -> Request:
    return Request(
        "home",
        {
            "user": draw(USERS),
            "tab": draw(st.one_of(st.just("home"), st.just("messages"), hostile())),
        },
    )


ANY_REQUEST = st.one_of(slash_commands(), button_clicks(), view_payloads(), home_events())


# --- sending ------------------------------------------------------------------------------


async def _live_confirmation(services: Services, bot: SlackBot) -> tuple[str, str]:
    """A real restore confirmation of web-01 (its id and the modal metadata carrying it)."""
    core = bot.core
    preview = await core.snapshots.restore_preview("web-01", "before")
    confirmation = await core.confirmations.create(
        RestoreRequest("web-01", preview.snapshot.label, preview.snapshot.libvirt_name),
        Actor(user=RESTORER, via="slack", team=req.TEAM_ID, channel=CHANNEL),
    )
    meta = json.dumps({"id": confirmation.id, "channel": CHANNEL, "team": req.TEAM_ID})
    return confirmation.id, meta


def _view_body(request: Request, metadata: str) -> bytes:
    f = request.fields
    callback = blocks.PICK_CALLBACK if request.kind == "pick_submit" else blocks.RESTORE_CALLBACK
    values: dict[str, Any] = {
        blocks.CONFIRM_BLOCK: {
            blocks.CONFIRM_INPUT: {"type": "plain_text_input", "value": f["typed"]}
        },
        blocks.SAFETY_BLOCK: {
            blocks.SAFETY_INPUT: {
                "type": "checkboxes",
                "selected_options": [
                    {"text": {"type": "plain_text", "text": "x"}, "value": v} for v in f["safety"]
                ],
            }
        },
        blocks.PICK_BLOCK: {
            blocks.PICK_INPUT: {
                "type": "static_select",
                "selected_option": None
                if f["picked"] is None
                else {"text": {"type": "plain_text", "text": "x"}, "value": f["picked"]},
            }
        },
    }
    payload = req.view_submission_payload(
        view_id="V_FUZZ",
        callback_id=callback,
        private_metadata=metadata,
        values=values,
        user_id=str(f["user"]),
    )
    if request.kind == "restore_closed":
        payload["type"] = "view_closed"
        payload["is_cleared"] = False
    if f["drop"] == "state":
        del payload["view"]["state"]
    elif f["drop"] == "values":
        payload["view"]["state"]["values"] = {}
    elif f["drop"] == "view_id":
        del payload["view"]["id"]
    return req.interaction_body(payload)


async def _body(bot: SlackBot, services: Services, request: Request) -> tuple[bytes, str | None]:
    """The signed body for ``request``, and the response_url it carries (if any)."""
    f = request.fields
    if request.kind == "command":
        url = bot.slack.new_response_url(channel=CHANNEL)
        body = req.slash_command_body(
            f["command"],
            f["text"],
            response_url=url,
            trigger_id=bot.slack.new_trigger_id(user_id=str(f["user"])),
            user_id=str(f["user"]),
            channel_id=CHANNEL,
        )
        return body, url
    if request.kind == "click":
        value = f["value"]
        if value == "REAL":
            value, _ = await _live_confirmation(services, bot)
        url = bot.slack.new_response_url(channel=CHANNEL)
        body = req.block_actions_body(
            action_id=f["action"],
            value=value,
            user_id=str(f["user"]),
            channel_id=CHANNEL,
            message_ts="1700000000.000001",
            response_url=url,
            trigger_id=bot.slack.new_trigger_id(user_id=str(f["user"])),
        )
        return body, url
    if request.kind == "home":
        payload = req.app_home_opened_event_payload(str(f["user"]))
        payload["event"]["tab"] = f["tab"]
        return json.dumps(payload).encode(), None
    metadata = f["metadata"]
    if metadata == "REAL":
        _, metadata = await _live_confirmation(services, bot)
    return _view_body(request, metadata), None


def _everything_sent(bot: SlackBot) -> str:
    """Every text snapbot sent Slack: Web API calls and response_url posts."""
    shown = ("text", "blocks", "view", "attachments")  # not ids such as user_id
    sent = [
        json.dumps({k: v for k, v in c.params.items() if k in shown}, default=str)
        for c in bot.slack.calls
    ]
    for hook in bot.slack.hooks.values():
        sent.extend(json.dumps(p.body, default=str) for p in hook.posts)
    sent.extend(json.dumps(p.body, default=str) for p in bot.slack.unknown_hook_posts)
    return "\n".join(sent)


async def send(bot: SlackBot, services: Services, request: Request, tally: Tally) -> None:
    tally.tried += 1
    body, _ = await _body(bot, services, request)
    started = time.monotonic()
    status, answer, _ = await bot.signed(body)
    seconds = time.monotonic() - started
    await bot.idle()
    problems = []
    if status != 200:
        problems.append(f"HTTP {status}: {answer[:300]}")
    if seconds > ACK_SECONDS:
        problems.append(f"ack after {seconds:.1f} s")
    if request.kind in ("restore_submit", "pick_submit") and answer:
        action = json.loads(answer).get("response_action")
        if action not in ("errors", "update", "push", "clear"):
            problems.append(f"invalid view ack {answer[:200]}")
    sent = answer + _everything_sent(bot)
    if INTERNAL in sent:
        problems.append("answered with an internal error")
    # snapbot never pings a channel or links anywhere itself: any of these came from input.
    for markup in ("<!channel>", "<!here>", "<!everyone>", "<!subteam", "<https://", "<mailto:"):
        if markup in sent:
            problems.append(f"input became markup: {markup}")
    if problems:
        tally.crashes.append(f"{request}: {problems}")
    assert not problems, f"{request}: {problems}\n{bot.slack.dump()}"
    # Each example starts from a clean slate of Slack traffic, so the check above looks only
    # at what this request caused.
    bot.slack.calls.clear()
    bot.slack.hooks.clear()
    bot.slack.unknown_hook_posts.clear()


async def _prepare(services: Services) -> None:
    for vm in ("web-01", "db-01"):
        await services.service.create_snapshot(vm, "before", actor=ALICE)


_SHORT = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "requests",
    [slash_commands(), button_clicks(), view_payloads(), home_events()],
    ids=["slash-commands", "buttons", "views", "home"],
)
async def test_every_slack_handler_survives_hostile_payloads(
    bot: SlackBot, services: Services, requests: st.SearchStrategy[Request]
) -> None:
    await _prepare(services)
    tally = Tally()

    @_SHORT
    @given(request=requests)
    def draw(request: Request) -> None:
        drawn.append(request)

    drawn: list[Request] = []
    draw()
    for request in drawn:
        await send(bot, services, request, tally)
    assert tally.tried == len(drawn) > 0


@pytest.mark.reliability
async def test_every_slack_handler_survives_hostile_payloads_long(
    bot: SlackBot, services: Services
) -> None:
    await _prepare(services)
    tally = Tally()

    @settings(
        max_examples=LONG_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=ANY_REQUEST)
    def draw(request: Request) -> None:
        drawn.append(request)

    drawn: list[Request] = []
    draw()
    try:
        for request in drawn:
            await send(bot, services, request, tally)
    finally:
        record(
            "fuzz: Slack payloads",
            "signed slash commands, button clicks, modal submissions and closes, Home events "
            f"with hostile values, {len(drawn)} drawn",
            f"{tally.tried} inputs tried, {len(tally.crashes)} crashes, every ack in time",
            passed=not tally.crashes,
        )


# --- the defects the fuzzers are for, as plain regression tests --------------------------------


async def test_an_odd_number_is_refused_in_the_ack(bot: SlackBot) -> None:
    # This raised ValueError out of the grammar before the ack: Slack showed "dispatch_failed".
    answer = await bot.command("/prune web-01 --keep-daily ²", user=ADMIN)
    assert answer.status == 200
    assert "--keep-daily needs a whole number such as 7" in answer.text
    huge = await bot.command("/snapshot schedule add n all daily 02:00 --keep-last " + "9" * 3000)
    assert huge.status == 200
    assert "too large; the limit is 100000" in huge.text


async def test_an_unexpected_error_before_the_ack_is_acked_with_a_reference(
    bot: SlackBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.slack import commands

    def exploding(command: str, text: str) -> object:
        raise KeyError("a bug")

    monkeypatch.setattr(commands, "parse", exploding)
    answer = await bot.command("/snapshot vms", user=ADMIN)
    assert answer.status == 200
    assert "Something went wrong inside snapbot (reference " in answer.text


async def test_a_modal_payload_missing_its_pieces_is_refused_inside_the_modal(
    bot: SlackBot,
) -> None:
    body = _view_body(
        Request(
            "pick_submit",
            {
                "typed": None,
                "safety": [],
                "picked": "before",
                "user": ADMIN,
                "drop": "state",
            },
        ),
        "{}",
    )
    status, answer, _ = await bot.signed(body)
    assert status == 200
    ack = json.loads(answer)
    assert ack["response_action"] == "update"
    assert "no longer known" in json.dumps(ack["view"])


async def test_a_malformed_confirmation_id_is_an_unknown_request(bot: SlackBot) -> None:
    # Found by the fuzzer: an id longer than the column raised out of the database layer.
    long_id = json.dumps({"id": "f" * 200, "channel": CHANNEL})
    body = _view_body(
        Request(
            "restore_submit",
            {"typed": "web-01", "safety": [], "picked": None, "user": ADMIN, "drop": None},
        ),
        long_id,
    )
    status, answer, _ = await bot.signed(body)
    assert status == 200
    ack = json.loads(answer)
    assert ack["response_action"] == "errors"
    assert "no longer known" in json.dumps(ack["errors"])

    url = bot.slack.new_response_url(channel=CHANNEL)
    await bot.click(blocks.CONFIRM_ACTION, "<!channel>" * 40, user=ADMIN, response_url=url)
    await bot.idle()
    (reply,) = bot.slack.responses(url)
    assert reply.text is not None
    assert "This request has expired; run the command again" in reply.text
    assert INTERNAL not in reply.text


async def test_an_unexpected_error_in_a_modal_submission_is_answered_inside_the_modal(
    bot: SlackBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.slack import restore_modal

    async def exploding(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(restore_modal, "_submit_restore", exploding)
    body = _view_body(
        Request(
            "restore_submit",
            {"typed": "web-01", "safety": [], "picked": None, "user": ADMIN, "drop": None},
        ),
        "{}",
    )
    status, answer, _ = await bot.signed(body)
    assert status == 200, "Slack gets its ack: not 'We had some trouble connecting'"
    ack = json.loads(answer)
    assert ack["response_action"] == "update"
    assert "Something went wrong inside snapbot (reference " in json.dumps(ack["view"])
