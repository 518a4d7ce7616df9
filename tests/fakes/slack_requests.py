"""Signed Slack requests with Slack's real wire shapes, for driving a bolt ``AsyncApp`` in tests.

Every payload exists twice: ``*_payload`` returns the dict (what a Socket Mode envelope carries
as ``payload``, or what ``AsyncBoltRequest(body=..., mode="socket_mode")`` takes) and ``*_body``
returns the raw HTTP body Slack would POST (form-encoded for slash commands, ``payload=<json>``
for interactions, JSON for Events API). ``sign`` adds the ``X-Slack-*`` headers for HTTP mode.

Identities match :mod:`tests.fakes.slack`: team ``T0001``, app ``A0001``, bot user ``UBOT``.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0001"
TEAM_DOMAIN = "test"
TEAM_NAME = "Test"
APP_ID = "A0001"
BOT_ID = "B0001"
BOT_USER_ID = "UBOT"
BOT_USER_NAME = "snapbot"
# The deprecated verification token Slack still puts in every payload; bolt ignores it.
VERIFICATION_TOKEN = "fake-verification-token"
# Defaults that can never reach the internet: port 9 (discard) on loopback refuses at once,
# and the fake answers ``invalid_trigger_id`` for a trigger it did not issue.
UNSET_RESPONSE_URL = "http://127.0.0.1:9/hooks/unset"
UNSET_TRIGGER_ID = "0000000000.0000000000.unset"

_action_ts = itertools.count(1)


def _next_action_ts() -> str:
    return f"{int(time.time())}.{next(_action_ts):06d}"


# --------------------------------------------------------------------------- signing


def sign(
    secret: str,
    body: bytes,
    timestamp: int | None = None,
    *,
    content_type: str | None = None,
) -> dict[str, str]:
    """Headers Slack sends with ``body``: ``Content-Type``, ``X-Slack-Request-Timestamp`` and
    ``X-Slack-Signature`` (``v0=`` + HMAC-SHA256 of ``v0:<ts>:<body>``). ``timestamp`` defaults
    to now; pass an old one to test the 5-minute replay window. The content type is guessed
    from the body (``{`` → JSON, else form) unless given."""
    ts = int(time.time()) if timestamp is None else timestamp
    guessed = (
        "application/json"
        if body.lstrip().startswith(b"{")
        else "application/x-www-form-urlencoded"
    )
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    if signature is None:  # only for an empty timestamp
        raise ValueError("could not sign the request")
    return {
        "Content-Type": content_type or guessed,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature,
    }


def signed_bolt_request(secret: str, body: bytes, timestamp: int | None = None) -> AsyncBoltRequest:
    """An HTTP-mode ``AsyncBoltRequest`` for ``await app.async_dispatch(...)`` (no server)."""
    headers = sign(secret, body, timestamp)
    return AsyncBoltRequest(
        body=body.decode("utf-8"),
        headers={k.lower(): [v] for k, v in headers.items()},
    )


def socket_mode_bolt_request(payload: dict[str, Any]) -> AsyncBoltRequest:
    """A Socket Mode ``AsyncBoltRequest`` (no signature is checked in that mode)."""
    return AsyncBoltRequest(body=payload, mode="socket_mode")


def interaction_body(payload: Mapping[str, Any]) -> bytes:
    """How Slack POSTs interactions: one form field ``payload`` holding JSON."""
    return ("payload=" + quote(json.dumps(payload))).encode()


# --------------------------------------------------------------------------- slash commands


def slash_command_payload(
    command: str,
    text: str,
    *,
    response_url: str,
    trigger_id: str,
    user_id: str = "U123",
    team_id: str = TEAM_ID,
    channel_id: str = "C0001",
    channel_name: str = "ops",
    user_name: str = "alice",
) -> dict[str, str]:
    """Every field Slack sends with a slash command (all strings, as on the wire)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def slash_command_body(
    command: str,
    text: str,
    *,
    response_url: str,
    trigger_id: str,
    user_id: str = "U123",
    team_id: str = TEAM_ID,
    channel_id: str = "C0001",
    channel_name: str = "ops",
    user_name: str = "alice",
) -> bytes:
    """The form-encoded body of a slash command."""
    payload = slash_command_payload(
        command,
        text,
        response_url=response_url,
        trigger_id=trigger_id,
        user_id=user_id,
        team_id=team_id,
        channel_id=channel_id,
        channel_name=channel_name,
        user_name=user_name,
    )
    return urlencode(payload).encode()


# --------------------------------------------------------------------------- block_actions


def _user(user_id: str, user_name: str, team_id: str) -> dict[str, str]:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def _action(action_id: str, block_id: str, value: str, action_type: str) -> dict[str, Any]:
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": _next_action_ts(),
    }
    if action_type == "button":
        action["value"] = value
        action["text"] = {"type": "plain_text", "text": value, "emoji": True}
    elif action_type in ("static_select", "radio_buttons"):
        action["selected_option"] = {
            "text": {"type": "plain_text", "text": value, "emoji": True},
            "value": value,
        }
    else:
        action["value"] = value
    return action


def block_actions_payload(
    *,
    action_id: str,
    value: str,
    user_id: str,
    channel_id: str,
    message_ts: str,
    block_id: str = "b",
    response_url: str = UNSET_RESPONSE_URL,
    trigger_id: str = UNSET_TRIGGER_ID,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
    channel_name: str = "ops",
    message: Mapping[str, Any] | None = None,
    action_type: str = "button",
    state_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A click on a button (or other element) in a message the bot posted. ``message`` is the
    message as Slack echoes it (e.g. ``FakeSlack.message(...).to_api()``); a minimal bot message
    is used otherwise."""
    echoed: dict[str, Any] = (
        dict(message)
        if message is not None
        else {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": message_ts,
            "text": "",
        }
    )
    return {
        "type": "block_actions",
        "user": _user(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": echoed,
        "state": {"values": dict(state_values or {})},
        "response_url": response_url,
        "actions": [_action(action_id, block_id, value, action_type)],
    }


def block_actions_body(
    *,
    action_id: str,
    value: str,
    user_id: str,
    channel_id: str,
    message_ts: str,
    block_id: str = "b",
    response_url: str = UNSET_RESPONSE_URL,
    trigger_id: str = UNSET_TRIGGER_ID,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
    channel_name: str = "ops",
    message: Mapping[str, Any] | None = None,
    action_type: str = "button",
    state_values: Mapping[str, Any] | None = None,
) -> bytes:
    """``payload=<json>`` of :func:`block_actions_payload`."""
    return interaction_body(
        block_actions_payload(
            action_id=action_id,
            value=value,
            user_id=user_id,
            channel_id=channel_id,
            message_ts=message_ts,
            block_id=block_id,
            response_url=response_url,
            trigger_id=trigger_id,
            team_id=team_id,
            user_name=user_name,
            channel_name=channel_name,
            message=message,
            action_type=action_type,
            state_values=state_values,
        )
    )


def view_block_actions_payload(
    *,
    action_id: str,
    value: str,
    user_id: str,
    view: Mapping[str, Any],
    block_id: str = "b",
    trigger_id: str = UNSET_TRIGGER_ID,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
    action_type: str = "button",
) -> dict[str, Any]:
    """A click inside a modal or the App Home tab (``view`` as the fake stored it). Slack sends
    no ``response_url``, ``channel`` or ``message`` here, only ``container.view_id`` + ``view``."""
    return {
        "type": "block_actions",
        "user": _user(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "view", "view_id": view["id"]},
        "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": dict(view),
        "actions": [_action(action_id, block_id, value, action_type)],
    }


def view_block_actions_body(
    *,
    action_id: str,
    value: str,
    user_id: str,
    view: Mapping[str, Any],
    block_id: str = "b",
    trigger_id: str = UNSET_TRIGGER_ID,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
    action_type: str = "button",
) -> bytes:
    """``payload=<json>`` of :func:`view_block_actions_payload`."""
    return interaction_body(
        view_block_actions_payload(
            action_id=action_id,
            value=value,
            user_id=user_id,
            view=view,
            block_id=block_id,
            trigger_id=trigger_id,
            team_id=team_id,
            user_name=user_name,
            action_type=action_type,
        )
    )


# --------------------------------------------------------------------------- view_submission


def view_submission_payload(
    *,
    view_id: str,
    callback_id: str,
    private_metadata: str,
    values: Mapping[str, Mapping[str, Mapping[str, Any]]],
    user_id: str,
    team_id: str = TEAM_ID,
    hash: str = "h",
    user_name: str = "alice",
    trigger_id: str = UNSET_TRIGGER_ID,
    blocks: list[dict[str, Any]] | None = None,
    title: str = "Confirm",
    submit: str = "Submit",
    external_id: str = "",
) -> dict[str, Any]:
    """A modal submission. ``values`` is ``view.state.values``: ``{block_id: {action_id:
    {"type": "plain_text_input", "value": "web-01"}}}``; checkboxes carry
    ``{"type": "checkboxes", "selected_options": [{"text": {...}, "value": "x"}]}``."""
    state = {b: {a: dict(v) for a, v in acts.items()} for b, acts in values.items()}
    return {
        "type": "view_submission",
        "team": {
            "id": team_id,
            "domain": TEAM_DOMAIN,
            "enterprise_id": None,
            "enterprise_name": None,
        },
        "user": _user(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": list(blocks or []),
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": state},
            "hash": hash,
            "title": {"type": "plain_text", "text": title, "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": {"type": "plain_text", "text": "Cancel", "emoji": True},
            "submit": {"type": "plain_text", "text": submit, "emoji": True},
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "external_id": external_id,
            "app_installed_team_id": team_id,
            "bot_id": BOT_ID,
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def view_submission_body(
    *,
    view_id: str,
    callback_id: str,
    private_metadata: str,
    values: Mapping[str, Mapping[str, Mapping[str, Any]]],
    user_id: str,
    team_id: str = TEAM_ID,
    hash: str = "h",
    user_name: str = "alice",
    trigger_id: str = UNSET_TRIGGER_ID,
    blocks: list[dict[str, Any]] | None = None,
    title: str = "Confirm",
    submit: str = "Submit",
    external_id: str = "",
) -> bytes:
    """``payload=<json>`` of :func:`view_submission_payload`."""
    return interaction_body(
        view_submission_payload(
            view_id=view_id,
            callback_id=callback_id,
            private_metadata=private_metadata,
            values=values,
            user_id=user_id,
            team_id=team_id,
            hash=hash,
            user_name=user_name,
            trigger_id=trigger_id,
            blocks=blocks,
            title=title,
            submit=submit,
            external_id=external_id,
        )
    )


# What Slack puts in state.values for an input the user left empty.
_EMPTY_STATE: dict[str, dict[str, Any]] = {
    "plain_text_input": {"value": None},
    "number_input": {"value": None},
    "email_text_input": {"value": None},
    "url_text_input": {"value": None},
    "checkboxes": {"selected_options": []},
    "multi_static_select": {"selected_options": []},
    "static_select": {"selected_option": None},
    "radio_buttons": {"selected_option": None},
    "users_select": {"selected_user": None},
    "multi_users_select": {"selected_users": []},
    "conversations_select": {"selected_conversation": None},
    "channels_select": {"selected_channel": None},
    "datepicker": {"selected_date": None},
}


def _plain(obj: Any, default: str) -> str:
    if isinstance(obj, Mapping):
        return str(obj.get("text", default))
    return default


def submission_payload_for(
    view: Mapping[str, Any],
    *,
    values: Mapping[str, Mapping[str, Mapping[str, Any]]],
    user_id: str,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
) -> dict[str, Any]:
    """Turn a view the app opened (``FakeSlack.views[...]``/``last_view()``) into the submission
    Slack would send: same id, hash, callback_id, private_metadata and blocks. Like Slack,
    ``state.values`` holds every input block (empty ones too); ``values`` overrides them and must
    name existing input ``block_id``/``action_id`` pairs (a typo raises ``ValueError``)."""
    inputs: dict[str, dict[str, dict[str, Any]]] = {}
    for block in view.get("blocks") or []:
        if block.get("type") != "input" or "element" not in block:
            continue
        element = block["element"]
        etype = str(element.get("type", ""))
        empty = {"type": etype, **_EMPTY_STATE.get(etype, {})}
        inputs.setdefault(str(block.get("block_id", "")), {})[str(element.get("action_id", ""))] = (
            empty
        )
    for block_id, actions in values.items():
        if block_id not in inputs:
            raise ValueError(
                f"view {view.get('id')} has no input block {block_id!r}; inputs: {sorted(inputs)}"
            )
        for action_id, value in actions.items():
            if action_id not in inputs[block_id]:
                raise ValueError(
                    f"input block {block_id!r} has no element {action_id!r}; "
                    f"elements: {sorted(inputs[block_id])}"
                )
            inputs[block_id][action_id] = {"type": inputs[block_id][action_id]["type"], **value}
    payload = view_submission_payload(
        view_id=str(view["id"]),
        callback_id=str(view.get("callback_id") or ""),
        private_metadata=str(view.get("private_metadata") or ""),
        values=inputs,
        user_id=user_id,
        team_id=team_id,
        hash=str(view.get("hash") or "h"),
        user_name=user_name,
        blocks=list(view.get("blocks") or []),
        title=_plain(view.get("title"), ""),
        submit=_plain(view.get("submit"), "Submit"),
        external_id=str(view.get("external_id") or ""),
    )
    for key in ("previous_view_id", "root_view_id", "clear_on_close", "notify_on_close", "close"):
        if key in view:
            payload["view"][key] = view[key]
    return payload


def submission_for(
    view: Mapping[str, Any],
    *,
    values: Mapping[str, Mapping[str, Mapping[str, Any]]],
    user_id: str,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
) -> bytes:
    """``payload=<json>`` of :func:`submission_payload_for`."""
    return interaction_body(
        submission_payload_for(
            view, values=values, user_id=user_id, team_id=team_id, user_name=user_name
        )
    )


# --------------------------------------------------------------------------- Events API


def app_home_opened_event_payload(
    user_id: str,
    *,
    team_id: str = TEAM_ID,
    channel: str = "D0001",
    event_id: str | None = None,
    event_time: int | None = None,
    view: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Events API ``event_callback`` wrapping ``app_home_opened`` (tab ``home``)."""
    now = int(time.time()) if event_time is None else event_time
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": channel,
        "tab": "home",
        "event_ts": f"{now}.{next(_action_ts):06d}",
    }
    if view is not None:
        event["view"] = dict(view)
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": now,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def app_home_opened_event_body(
    user_id: str,
    *,
    team_id: str = TEAM_ID,
    channel: str = "D0001",
    event_id: str | None = None,
    event_time: int | None = None,
    view: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON body of :func:`app_home_opened_event_payload`."""
    return json.dumps(
        app_home_opened_event_payload(
            user_id,
            team_id=team_id,
            channel=channel,
            event_id=event_id,
            event_time=event_time,
            view=view,
        )
    ).encode()
