"""R16: the signature matrix, against the real bolt app served over HTTP.

Each variant is a slash command (or a click, or an Events API delivery) whose signature or
headers are wrong in one way. A refused request must get 401 and leave no trace a user or an
auditor would notice: no libvirt call, no operation row, no claimed confirmation, nothing posted
in Slack. The valid ones (mixed-case header names, a timestamp just inside the 5-minute window)
must work, and a valid request replayed inside the window is accepted by the signature but runs
once.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode

from slack_sdk.signature import SignatureVerifier

from bot.slack import blocks
from core.domain.operation import OperationKind, OperationStatus
from tests.conftest import ALICE, Services
from tests.fakes import slack_requests as req
from tests.reliability.figures import record
from tests.slack.harness import ADMIN, CHANNEL, SECRET, SlackBot, confirm_value

Headers = dict[str, str]


def _now() -> float:
    return time.time()


def _signed(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> Headers:
    return req.sign(secret, body, timestamp)


def _without(headers: Headers, name: str) -> Headers:
    return {k: v for k, v in headers.items() if k.lower() != name.lower()}


def _mixed_case(headers: Headers) -> Headers:
    """``X-Slack-Signature`` sent as ``x-SLACK-sIgNaTuRe``: header names are case-insensitive."""
    return {
        "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(k)): v
        for k, v in headers.items()
    }


def _raw_signature(body: bytes, timestamp: str) -> Headers:
    """Headers signed over an arbitrary timestamp string (not necessarily an integer)."""
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


def _one_byte_changed(body: bytes, marker: bytes) -> bytes:
    """The same body with one byte of ``marker`` (inside the command text) altered."""
    at = body.index(marker) + len(marker) - 1
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


def _reserialised_form(body: bytes) -> bytes:
    """The same fields, encoded again the way another library would (``%20`` for spaces)."""
    fields = parse_qsl(body.decode())
    again = urlencode(fields, quote_via=quote).encode()
    assert again != body
    assert parse_qsl(again.decode()) == fields
    return again


def _reserialised_interaction(body: bytes) -> bytes:
    """The same interaction JSON, re-dumped compactly (what a proxy that parses JSON sends)."""
    payload = json.loads(unquote(body.decode().removeprefix("payload=")))
    again = ("payload=" + quote(json.dumps(payload, separators=(",", ":")))).encode()
    assert again != body
    return again


@dataclass(frozen=True)
class Variant:
    name: str
    accepted: bool  # what Slack's signing rules say should happen
    build: Callable[[bytes], tuple[bytes, Headers]]


def _command_variants() -> list[Variant]:
    return [
        Variant("valid", True, lambda b: (b, _signed(b))),
        Variant("valid, 290 s old", True, lambda b: (b, _signed(b, timestamp=int(_now()) - 290))),
        Variant("mixed-case header names", True, lambda b: (b, _mixed_case(_signed(b)))),
        Variant("wrong secret", False, lambda b: (b, _signed(b, secret="not-" + SECRET))),
        Variant(
            "timestamp 301 s old",
            False,
            lambda b: (b, _signed(b, timestamp=math.floor(_now()) - 301)),
        ),
        Variant(
            "timestamp 301 s in the future",
            False,
            lambda b: (b, _signed(b, timestamp=math.ceil(_now()) + 301)),
        ),
        Variant(
            "one byte of the body changed",
            False,
            lambda b: (_one_byte_changed(b, b"sig-"), _signed(b)),
        ),
        Variant(
            "signature header missing",
            False,
            lambda b: (b, _without(_signed(b), "X-Slack-Signature")),
        ),
        Variant(
            "timestamp header missing",
            False,
            lambda b: (b, _without(_signed(b), "X-Slack-Request-Timestamp")),
        ),
        Variant(
            "both headers missing",
            False,
            lambda b: (
                b,
                _without(_without(_signed(b), "X-Slack-Signature"), "X-Slack-Request-Timestamp"),
            ),
        ),
        Variant(
            "v1 scheme instead of v0",
            False,
            lambda b: (
                b,
                {
                    **_signed(b),
                    "X-Slack-Signature": _signed(b)["X-Slack-Signature"].replace("v0=", "v1=", 1),
                },
            ),
        ),
        Variant(
            "empty signature",
            False,
            lambda b: (b, {**_signed(b), "X-Slack-Signature": ""}),
        ),
        Variant(
            "re-serialised body",
            False,
            lambda b: (_reserialised_form(b), _signed(b)),
        ),
    ]


@dataclass
class Tried:
    variant: str
    label: str
    accepted_expected: bool
    status: int
    response_url: str


def _label(n: int) -> str:
    return f"sig-{n:02d}"


async def _snapshot_command(bot: SlackBot, label: str) -> tuple[bytes, str]:
    response_url = bot.slack.new_response_url(channel=CHANNEL)
    body = req.slash_command_body(
        "/snapshot",
        f"web-01 {label}",
        response_url=response_url,
        trigger_id=bot.slack.new_trigger_id(user_id=ADMIN),
        user_id=ADMIN,
        channel_id=CHANNEL,
    )
    return body, response_url


async def _pending_delete(bot: SlackBot, services: Services, label: str) -> tuple[str, str]:
    """A delete preview for ``label``; returns the Confirm button's value and the preview's url."""
    await services.service.create_snapshot("web-02", label, actor=ALICE)
    answer = await bot.command(f"/snapshot delete web-02 {label}", user=ADMIN)
    assert answer.status == 200
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    value = confirm_value(preview[0].blocks)
    return str(value), answer.response_url


def _click(bot: SlackBot, value: str, response_url: str) -> bytes:
    return req.block_actions_body(
        action_id=blocks.CONFIRM_ACTION,
        value=value,
        user_id=ADMIN,
        channel_id=CHANNEL,
        message_ts="1700000000.000001",
        response_url=response_url,
        trigger_id=bot.slack.new_trigger_id(user_id=ADMIN),
    )


async def test_signature_matrix_over_http(bot: SlackBot, services: Services) -> None:
    tried: list[Tried] = []
    wrong: list[str] = []

    # 1. Slash commands: every variant asks for its own snapshot, so its effect is visible.
    for n, variant in enumerate(_command_variants()):
        label = _label(n)
        body, response_url = await _snapshot_command(bot, label)
        sent_body, headers = variant.build(body)
        status, text, _ = await bot.post(sent_body, headers)
        tried.append(Tried(variant.name, label, variant.accepted, status, response_url))
        expected = 200 if variant.accepted else 401
        if status != expected:
            wrong.append(f"{variant.name}: HTTP {status} ({text[:80]!r}), expected {expected}")
        await bot.idle()  # one snapshot at a time: a busy VM would hide what the request did

    # 2. A valid request replayed within the window (a captured request re-sent): the
    # signature accepts it, the command runs once.
    replay_label = "sig-replayed"
    body, replay_url = await _snapshot_command(bot, replay_label)
    headers = _signed(body)
    replays = await asyncio.gather(*(bot.post(body, headers) for _ in range(3)))
    replay_statuses = [s for s, _, _ in replays]
    if replay_statuses != [200, 200, 200]:
        wrong.append(f"replay: statuses {replay_statuses}, expected 200 each")

    # 3. A Confirm click on a real pending delete, forged: the confirmation must stay unused.
    value, preview_url = await _pending_delete(bot, services, "keep-me")
    click_variants = [
        ("click: wrong secret", lambda b: (b, _signed(b, secret="x" + SECRET))),
        ("click: 301 s old", lambda b: (b, _signed(b, timestamp=math.floor(_now()) - 301))),
        ("click: one byte changed", lambda b: (_one_byte_changed(b, b"U_ADMI"), _signed(b))),
        ("click: re-serialised JSON", lambda b: (_reserialised_interaction(b), _signed(b))),
        ("click: no signature", lambda b: (b, _without(_signed(b), "X-Slack-Signature"))),
    ]
    for name, build in click_variants:
        sent_body, headers = build(_click(bot, value, preview_url))
        status, text, _ = await bot.post(sent_body, headers)
        tried.append(Tried(name, "", False, status, ""))
        if status != 401:
            wrong.append(f"{name}: HTTP {status} ({text[:80]!r}), expected 401")

    # 4. An Events API delivery (App Home) with a bad signature publishes nothing.
    event = req.app_home_opened_event_body(ADMIN)
    status, text, _ = await bot.post(event, _signed(event, secret="x" + SECRET))
    tried.append(Tried("event: wrong secret", "", False, status, ""))
    if status != 401:
        wrong.append(f"event: wrong secret: HTTP {status}, expected 401")

    await asyncio.sleep(0.5)  # anything a wrongly accepted request started has begun by now
    await bot.idle()

    snapshots = {s.label for s in await services.catalogue.snapshots()}
    operations = await services.catalogue.operations(limit=1000)
    for t in tried:
        if not t.label:
            continue
        ops = [o for o in operations if o.snapshot_label == t.label]
        posts = bot.slack.responses(t.response_url)
        in_channel = [m for m in bot.slack.messages(CHANNEL) if f"`{t.label}`" in m.text]
        if t.accepted_expected:
            if t.label not in snapshots or [o.status for o in ops] != [OperationStatus.SUCCEEDED]:
                wrong.append(f"{t.variant}: the snapshot was not taken once ({ops})")
        elif t.label in snapshots or ops or posts or in_channel:
            wrong.append(
                f"{t.variant}: refused request left a trace: snapshot={t.label in snapshots} "
                f"operations={len(ops)} replies={len(posts)} channel={len(in_channel)}"
            )

    replayed_ops = [o for o in operations if o.snapshot_label == replay_label]
    if [o.status for o in replayed_ops] != [OperationStatus.SUCCEEDED]:
        wrong.append(f"replay ran {len(replayed_ops)} times: {replayed_ops}")
    if len(bot.slack.responses(replay_url)) > 1:
        wrong.append("replay: more than one reply")

    confirmation = await services.catalogue.get_confirmation(value)
    assert confirmation is not None
    if confirmation.used_at is not None or "keep-me" not in snapshots:
        wrong.append("a forged click claimed the delete confirmation")
    if any(o.kind is OperationKind.DELETE for o in operations):
        wrong.append("a forged click started a delete")
    if bot.slack.calls_to("views.publish"):
        wrong.append("a forged event published the App Home")

    # The genuine click still works afterwards: the forgeries did not spend it.
    genuine = _click(bot, value, preview_url)
    status, _, _ = await bot.post(genuine, _signed(genuine))
    assert status == 200
    await bot.slack.wait_for_message(lambda m: "Delete" in m.text and m.text.startswith("✅"))
    await bot.idle()
    assert "keep-me" not in {s.label for s in await services.catalogue.snapshots()}

    invalid = [t for t in tried if not t.accepted_expected]
    invalid_accepted = sum(t.status != 401 for t in invalid)
    requests = len(tried) + len(replays) + 1
    record(
        "Signature matrix (HTTP)",
        f"{len(tried)} signed-request variants (commands, a Confirm click, an event: wrong "
        "secret, ±301 s, one byte changed, missing headers, v1 scheme, re-serialised body, "
        "mixed-case headers) and a 3× replay, against the real bolt app over HTTP",
        f"{requests} requests, {len(invalid)} invalid, {invalid_accepted} invalid accepted, "
        f"replay ran {len(replayed_ops)}×",
        passed=not wrong,
    )
    assert not wrong, "\n".join(wrong)


NON_INTEGER_TIMESTAMPS = (("non-integer timestamp", "{now}.5"), ("non-numeric timestamp", "now"))


async def test_a_non_integer_timestamp_is_refused_with_401(
    bot: SlackBot, services: Services
) -> None:
    """Slack's timestamp is whole seconds; anything else is a forged or broken request and must
    be refused like one (401), not crash the verification middleware (500 and an ERROR log
    with a traceback, which anyone on the internet can trigger at will)."""
    statuses: list[tuple[str, int]] = []
    for n, (name, stamp) in enumerate(NON_INTEGER_TIMESTAMPS):
        body, response_url = await _snapshot_command(bot, f"sig-ts-{n}")
        status, _, _ = await bot.post(body, _raw_signature(body, stamp.format(now=int(_now()))))
        statuses.append((name, status))
        assert not bot.slack.responses(response_url)
    await asyncio.sleep(0.3)
    await bot.idle()
    assert not await services.catalogue.operations(), "never accepted"
    refused = all(status == 401 for _, status in statuses)
    record(
        "Signature: non-integer timestamp",
        "slash commands signed over a timestamp that is not an integer ('…5', 'now')",
        ", ".join(f"{name}: HTTP {status}" for name, status in statuses) + "; 0 accepted",
        passed=refused,
    )
    assert refused, statuses
