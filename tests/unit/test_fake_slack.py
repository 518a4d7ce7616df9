"""Tests of the fake Slack itself: Web API state, knobs, signing, HTTP and Socket Mode transports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import (
    app_home_opened_event_body,
    block_actions_body,
    sign,
    signed_bolt_request,
    slash_command_body,
    slash_command_payload,
    submission_for,
)

SECRET = "test-signing-secret"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*web-01*: snapshotting"}}]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(usergroups={"S0OPS": ["U123", "U456"]}) as fake:
        yield fake


def client_for(slack: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack.api_url, **kwargs)


async def api_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# --------------------------------------------------------------------------- Web API state


async def test_post_then_update_keeps_every_text(slack: FakeSlack) -> None:
    client = client_for(slack)
    posted = await client.chat_postMessage(channel="C1", text="starting", blocks=BLOCKS)
    reply = await client.chat_postMessage(channel="C1", text="step 1", thread_ts=posted["ts"])
    await client.chat_update(channel="C1", ts=posted["ts"], text="50%", blocks=BLOCKS)
    await client.chat_update(channel="C1", ts=posted["ts"], text="done")

    assert posted["channel"] == "C1"
    assert posted["message"]["user"] == "UBOT"
    assert float(reply["ts"]) > float(posted["ts"])
    assert slack.history("C1", posted["ts"]) == ["starting", "50%", "done"]
    msg = slack.message("C1", posted["ts"])
    assert msg.text == "done"
    assert msg.blocks == []
    assert [m.text for m in slack.messages("C1")] == ["done", "step 1"]
    assert [m.ts for m in slack.thread("C1", posted["ts"])] == [reply["ts"]]
    first_update = slack.calls_to("chat.update")[0]
    assert first_update.params["blocks"] == BLOCKS
    assert first_update.ok
    assert first_update.token == "xoxb-test"


async def test_form_encoded_json_params_are_decoded(slack: FakeSlack) -> None:
    await client_for(slack).api_call(
        "chat.postMessage", data={"channel": "C1", "text": "hi", "blocks": json.dumps(BLOCKS)}
    )
    assert slack.calls_to("chat.postMessage")[0].params["blocks"] == BLOCKS
    assert slack.messages("C1")[0].blocks == BLOCKS


async def test_update_of_unknown_or_foreign_message_is_refused(slack: FakeSlack) -> None:
    client = client_for(slack)
    posted = await client.chat_postMessage(channel="C1", text="x")
    user_msg = slack.add_user_message("C1", "hello bot")
    eph = await client.chat_postEphemeral(channel="C1", user="U123", text="only you")

    for channel, ts, error in [
        ("C1", "1.000001", "message_not_found"),
        ("C2", posted["ts"], "message_not_found"),
        ("C1", eph["message_ts"], "message_not_found"),
        ("C1", user_msg.ts, "cant_update_message"),
    ]:
        e = await api_error(client.chat_update(channel=channel, ts=ts, text="y"))
        assert e.response["error"] == error, (channel, ts)
    assert slack.history("C1", posted["ts"]) == ["x"]
    assert slack.ephemerals[0].user == "U123"


async def test_auth_and_unknown_method(slack: FakeSlack) -> None:
    e = await api_error(AsyncWebClient(base_url=slack.api_url).auth_test())
    assert e.response["error"] == "not_authed"
    e = await api_error(client_for(slack).api_call("chat.scheduleMessage"))
    assert e.response["error"] == "unknown_method"
    auth = await client_for(slack).auth_test()
    assert (auth["team_id"], auth["user_id"], auth["bot_id"]) == ("T0001", "UBOT", "B0001")
    users = await client_for(slack).usergroups_users_list(usergroup="S0OPS")
    assert users["users"] == ["U123", "U456"]
    assert slack.calls_to("usergroups.users.list")[0].http_method == "GET"
    e = await api_error(client_for(slack).usergroups_users_list(usergroup="S0NOPE"))
    assert e.response["error"] == "no_such_subteam"


# --------------------------------------------------------------------------- views


def modal(private_metadata: str = "{}") -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "restore_confirm",
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Restore web-01"},
        "submit": {"type": "plain_text", "text": "Restore"},
        "blocks": [
            {
                "type": "input",
                "block_id": "confirm",
                "label": {"type": "plain_text", "text": "Type the VM name"},
                "element": {"type": "plain_text_input", "action_id": "typed"},
            }
        ],
    }


async def test_trigger_is_single_use_and_expires(slack: FakeSlack) -> None:
    client = client_for(slack)
    trigger = slack.new_trigger_id()
    opened = await client.views_open(trigger_id=trigger, view=modal())
    view = opened["view"]
    assert view["id"].startswith("V")
    assert view["hash"]
    assert view["callback_id"] == "restore_confirm"
    assert slack.last_view() == view

    e = await api_error(client.views_open(trigger_id=trigger, view=modal()))
    assert e.response["error"] == "exchanged_trigger_id"
    stale = slack.new_trigger_id(issued_ago=3.1)
    e = await api_error(client.views_open(trigger_id=stale, view=modal()))
    assert e.response["error"] == "expired_trigger_id"
    e = await api_error(client.views_open(trigger_id="123.456.abc", view=modal()))
    assert e.response["error"] == "invalid_trigger_id"
    e = await api_error(
        client.views_open(trigger_id=slack.new_trigger_id(), view=modal("x" * 3001))
    )
    assert e.response["error"] == "invalid_arguments"

    updated = await client.views_update(view_id=view["id"], hash=view["hash"], view=modal("{1}"))
    assert updated["view"]["hash"] != view["hash"]
    e = await api_error(client.views_update(view_id=view["id"], hash=view["hash"], view=modal()))
    assert e.response["error"] == "hash_conflict"


# --------------------------------------------------------------------------- knobs


async def test_429_retry_after_is_honoured_by_the_retry_handler(slack: FakeSlack) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    client = client_for(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
    posted = await client.chat_postMessage(channel="C1", text="hi")

    assert posted["ok"]
    first, second = slack.calls_to("chat.postMessage")
    assert (first.rate_limited, first.status, first.error) == (True, 429, "ratelimited")
    assert (second.rate_limited, second.status, second.ok) == (False, 200, True)
    # The handler sleeps int(Retry-After) + random() before the second attempt.
    assert 1.0 <= second.at - first.at < 2.5
    assert [m.text for m in slack.messages("C1")] == ["hi"]


async def test_429_without_handler_and_fail_knob(slack: FakeSlack) -> None:
    client = client_for(slack)
    slack.rate_limit("chat.update", retry_after=7)
    e = await api_error(client.chat_update(channel="C1", ts="1.1", text="x"))
    assert e.response.status_code == 429
    assert e.response.headers["Retry-After"] == "7"

    slack.fail("chat.postMessage", "not_in_channel")
    e = await api_error(client.chat_postMessage(channel="C1", text="x"))
    assert e.response["error"] == "not_in_channel"
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"]


async def test_delay_and_wait_for(slack: FakeSlack) -> None:
    client = client_for(slack)
    slack.delay("chat.postMessage", 0.3)
    task = asyncio.create_task(client.chat_postMessage(channel="C1", text="slow"))
    pending = await slack.wait_for(lambda c: c.method == "chat.postMessage", timeout=1)
    assert pending.response is None
    assert not task.done()
    msg = await slack.wait_for_message(lambda m: m.text == "slow", channel="C1", timeout=2)
    assert msg.ts == (await task)["ts"]
    with pytest.raises(AssertionError, match=r"chat\.postMessage"):
        await slack.wait_for(lambda c: c.method == "chat.update", timeout=0.1)


# --------------------------------------------------------------------------- response_url


async def test_response_url_accepts_five_posts(slack: FakeSlack) -> None:
    url = slack.new_response_url()
    statuses = []
    for i in range(6):
        resp = await AsyncWebhookClient(url).send(text=f"r{i}", response_type="in_channel")
        statuses.append((resp.status_code, resp.body))
    assert statuses[:5] == [(200, "ok")] * 5
    assert statuses[5] == (404, "used_url")
    posts = slack.responses(url)
    assert [p.text for p in posts] == [f"r{i}" for i in range(6)]
    assert [p.accepted for p in posts] == [True] * 5 + [False]
    assert posts[0].response_type == "in_channel"
    unknown = await AsyncWebhookClient(f"{slack.url}/hooks/nope").send(text="x")
    assert unknown.status_code == 404


async def test_response_url_replace_original_edits_the_message(slack: FakeSlack) -> None:
    posted = await client_for(slack).chat_postMessage(channel="C1", text="Restore web-01?")
    url = slack.new_response_url(channel="C1", message_ts=posted["ts"])
    await AsyncWebhookClient(url).send(text="Restoring…", replace_original=True)
    assert slack.history("C1", posted["ts"]) == ["Restore web-01?", "Restoring…"]
    await AsyncWebhookClient(url).send(text="", delete_original=True)
    assert slack.messages("C1") == []


# --------------------------------------------------------------------------- signing / HTTP


def test_sign_produces_headers_slack_sdk_accepts() -> None:
    body = slash_command_body("/snapshot", "web-01", response_url="u", trigger_id="t")
    headers = sign(SECRET, body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, headers)
    assert headers["X-Slack-Signature"].startswith("v0=")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert not verifier.is_valid_request(body + b"x", headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body, sign(SECRET, body, int(time.time()) - 301))
    assert sign(SECRET, b'{"a": 1}')["Content-Type"] == "application/json"


def make_app(slack: FakeSlack) -> AsyncApp:
    app = AsyncApp(client=client_for(slack), signing_secret=SECRET)

    @app.command("/snapshot")
    async def snapshot(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        await ack(f"Snapshotting {command['text']}")
        await respond(f"done: {command['text']} for {command['user_id']}")

    return app


async def test_http_round_trip_through_web_app(slack: FakeSlack) -> None:
    app = make_app(slack)
    url = slack.new_response_url()
    body = slash_command_body(
        "/snapshot", "web-01", response_url=url, trigger_id=slack.new_trigger_id()
    )
    async with TestClient(TestServer(app.web_app(path="/slack/events"))) as http:
        ok = await http.post("/slack/events", data=body, headers=sign(SECRET, body))
        assert ok.status == 200
        # ack("text") is answered as text/plain, not JSON.
        assert ok.content_type == "text/plain"
        assert await ok.text() == "Snapshotting web-01"
        bad = await http.post("/slack/events", data=body, headers=sign("wrong", body))
        assert bad.status == 401
        await slack.wait_until(lambda: slack.responses(url), timeout=2, what="respond()")
    assert [p.text for p in slack.responses(url)] == ["done: web-01 for U123"]
    assert len(slack.calls_to("auth.test")) == 1


async def test_modal_submission_and_app_home_via_dispatch(slack: FakeSlack) -> None:
    app = AsyncApp(client=client_for(slack), signing_secret=SECRET)
    submitted: list[dict[str, Any]] = []

    @app.action("restore")
    async def restore(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        meta = json.dumps({"vm": body["actions"][0]["value"]})
        await client.views_open(trigger_id=body["trigger_id"], view=modal(meta))

    @app.view("restore_confirm")
    async def confirm(ack: AsyncAck, view: dict[str, Any]) -> None:
        typed = view["state"]["values"]["confirm"]["typed"]["value"]
        vm = json.loads(view["private_metadata"])["vm"]
        if typed != vm:
            await ack(response_action="errors", errors={"confirm": "Type the VM name exactly"})
            return
        await ack()
        submitted.append(view)

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_publish(user_id=event["user"], view={"type": "home", "blocks": BLOCKS})

    posted = await client_for(slack).chat_postMessage(channel="C1", text="Restore?")
    click = block_actions_body(
        action_id="restore",
        value="web-01",
        user_id="U123",
        channel_id="C1",
        message_ts=posted["ts"],
        trigger_id=slack.new_trigger_id(),
        response_url=slack.new_response_url(channel="C1", message_ts=posted["ts"]),
        message=slack.message("C1", posted["ts"]).to_api(),
    )
    assert (await app.async_dispatch(signed_bolt_request(SECRET, click))).status == 200
    view = await slack.wait_until(lambda: slack.views and slack.last_view(), timeout=2)

    wrong = submission_for(view, values={"confirm": {"typed": {"value": "web-02"}}}, user_id="U123")
    resp = await app.async_dispatch(signed_bolt_request(SECRET, wrong))
    assert json.loads(resp.body)["response_action"] == "errors"
    right = submission_for(view, values={"confirm": {"typed": {"value": "web-01"}}}, user_id="U123")
    assert (await app.async_dispatch(signed_bolt_request(SECRET, right))).body == ""
    assert submitted[0]["id"] == view["id"]
    assert submitted[0]["hash"] == view["hash"]
    with pytest.raises(ValueError, match="no input block"):
        submission_for(view, values={"confirmm": {"typed": {"value": "x"}}}, user_id="U123")

    event = app_home_opened_event_body("U123")
    assert (await app.async_dispatch(signed_bolt_request(SECRET, event))).status == 200
    home_view = await slack.wait_until(lambda: slack.home_views.get("U123"), timeout=2)
    assert home_view["type"] == "home"
    assert home_view["blocks"] == BLOCKS


# --------------------------------------------------------------------------- Socket Mode


async def test_socket_mode_envelope_ack_and_reconnect(slack: FakeSlack) -> None:
    app = make_app(slack)

    @app.command("/ping")
    async def ping(ack: AsyncAck) -> None:
        await ack("pong")

    handler = AsyncSocketModeHandler(app, app_token="xapp-test")
    try:
        await handler.connect_async()
        await slack.wait_for_socket(1)
        assert slack.calls_to("apps.connections.open")[0].token == "xapp-test"
        assert slack.socket_frames == []  # nothing sent before the first envelope

        payload = slash_command_payload(
            "/ping", "", response_url=slack.new_response_url(), trigger_id=slack.new_trigger_id()
        )
        ack = await slack.send_envelope("slash_commands", payload)
        assert ack["envelope_id"] == slack.envelopes[0].envelope_id
        assert ack["payload"] == {"text": "pong"}

        assert await slack.drop_socket_connections() == 1
        # SocketModeClient reconnects on the server's CLOSE frame: a second
        # apps.connections.open, then a second WebSocket.
        await slack.wait_for_socket(2, timeout=5)
        assert len(slack.calls_to("apps.connections.open")) == 2
        again = await slack.send_envelope("slash_commands", payload)
        assert again["payload"] == {"text": "pong"}

        await slack.send_disconnect("refresh_requested")
        await slack.wait_for_socket(3, timeout=5)
    finally:
        await handler.close_async()
    assert slack.socket_connections == 3


async def test_socket_mode_reconnect_after_abrupt_drop_and_stall(slack: FakeSlack) -> None:
    """Without a CLOSE frame the SDK notices only on its monitor's next tick (ping_interval;
    bolt's default is 10 s); a stalled peer (no pongs) takes about two ticks."""
    app = make_app(slack)
    handler = AsyncSocketModeHandler(app, app_token="xapp-test", ping_interval=0.5)
    try:
        await handler.connect_async()
        await slack.wait_for_socket(1)

        await slack.drop_socket_connections(abrupt=True)
        started = time.monotonic()
        await slack.wait_for_socket(2, timeout=3)
        assert 0.3 < time.monotonic() - started < 1.5

        assert slack.stall_socket_connections() == 1
        started = time.monotonic()
        await slack.wait_for_socket(3, timeout=4)
        assert 0.5 < time.monotonic() - started < 2.5
        payload = slash_command_payload(
            "/snapshot",
            "web-01",
            response_url=slack.new_response_url(),
            trigger_id=slack.new_trigger_id(),
        )
        ack = await slack.send_envelope("slash_commands", payload)
        assert ack["payload"] == {"text": "Snapshotting web-01"}
    finally:
        await handler.close_async()
