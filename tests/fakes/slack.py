"""An in-process fake of Slack (Web API, ``response_url`` hooks, Socket Mode) for tests.

``FakeSlack`` is an aiohttp server on ``127.0.0.1``, port 0, in the test's own event loop::

    async with FakeSlack() as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        ...
        msg = await slack.wait_for_message(lambda m: "done" in m.text, channel="C0001")

Web API methods live at ``/api/<method>`` and accept what slack-sdk sends: query parameters
(``params=``), form bodies and JSON bodies, the token in ``Authorization: Bearer``. State is kept
like Slack keeps it (messages with edit history, views, App Home per user, single-use triggers)
and every call is recorded in ``slack.calls``. Knobs inject 429s, error answers and latency.

Files go up as on Slack: ``files.getUploadURLExternal`` hands out an upload URL served by the
fake, the bytes are POSTed there, ``files.completeUploadExternal`` shares them (its blocks may show
the file with an image block's ``slack_file``; a file shared nowhere cannot be shown).

Error names follow Slack's documentation for each method, e.g. ``views.open`` answers
``exchanged_trigger_id`` / ``expired_trigger_id`` / ``invalid_trigger_id`` (``trigger_exchanged``
and ``trigger_expired`` are the legacy ``dialog.open`` names).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.slack_requests import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    BOT_USER_NAME,
    TEAM_DOMAIN,
    TEAM_ID,
    TEAM_NAME,
)

T = TypeVar("T")

# Parameters that carry JSON inside a form field (slack-sdk sends them as JSON strings when the
# caller uses form data, and as objects in a JSON body): both end up as objects in Call.params.
JSON_PARAMS = frozenset({"blocks", "attachments", "view", "metadata", "user_auth_blocks", "files"})

# Methods that need an app-level token (xapp-); every other method needs a bot token (xoxb-).
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_POST_TEXT = 40_000
MAX_UPDATE_TEXT = 4_000
MAX_VIEW_BYTES = 250_000
MAX_PRIVATE_METADATA = 3_000
MAX_TITLE = 24
MAX_CALLBACK_ID = 255
RESPONSE_URL_MAX_POSTS = 5
RESPONSE_URL_TTL = 30 * 60.0
TRIGGER_TTL = 3.0
# files.getUploadURLExternal refuses larger uploads with file_too_large (1 GB).
MAX_UPLOAD_BYTES = 1_000_000_000

# Every payload the fake receives (Web API parameters, response_url posts, Socket Mode frames)
# is shown to these callables as ``(where, text)``: the session-wide secret-leak scan
# (tests/security/leakscan.py) reads everything the bot ever sends to Slack.
RECEIVED: list[Callable[[str, str], None]] = []


def _received(where: str, payload: Any) -> None:
    if RECEIVED:
        text = json.dumps(payload, default=str, ensure_ascii=False)
        for observe in RECEIVED:
            observe(where, text)


class SlackError(Exception):
    """Raised by a method handler: becomes ``{"ok": false, "error": error, **extra}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class Call:
    """One Web API call as the fake saw it. ``status``/``response`` are ``None`` while the call
    is still being answered (e.g. under ``delay``)."""

    method: str
    params: dict[str, Any]
    at: float
    token: str | None = None
    http_method: str = "POST"
    rate_limited: bool = False
    status: int | None = None
    response: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.response and self.response.get("ok"))

    @property
    def error(self) -> str | None:
        if self.response is None or self.response.get("ok"):
            return None
        return str(self.response.get("error"))

    def __str__(self) -> str:
        outcome = (
            "pending"
            if self.response is None
            else "ok"
            if self.ok
            else f"{self.status} {self.error}"
        )
        return f"{self.method} {_short(self.params)} -> {outcome}"


@dataclass
class Revision:
    """One state of a message: the post, then each edit."""

    text: str
    blocks: list[dict[str, Any]]
    at: float
    via: str  # "chat.postMessage", "chat.update", "response_url"


@dataclass
class FakeMessage:
    """A message in a channel, in its current state; ``revisions`` holds every state it had."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    user: str = BOT_USER_ID
    bot_id: str | None = BOT_ID
    metadata: dict[str, Any] | None = None
    deleted: bool = False
    revisions: list[Revision] = field(default_factory=list)
    # Ids of the files this message shared (a files.completeUploadExternal share).
    files: list[str] = field(default_factory=list)

    @property
    def by_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def edited(self) -> bool:
        return len(self.revisions) > 1

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.revisions]

    def to_api(self) -> dict[str, Any]:
        """The message as Slack returns it (and echoes it in ``block_actions``)."""
        out: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "text": self.text,
            "ts": self.ts,
            "team": TEAM_ID,
        }
        if self.bot_id is not None:
            out["bot_id"] = self.bot_id
            out["app_id"] = APP_ID
        if self.blocks:
            out["blocks"] = self.blocks
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.edited:
            out["edited"] = {"user": self.user, "ts": self.revisions[-1].at}
        if self.files:
            out["files"] = [{"id": f} for f in self.files]
            out["upload"] = True
        return out

    def images(self) -> list[str]:
        """The file ids the message's image blocks show (``slack_file`` by id)."""
        return [
            str(b["slack_file"]["id"])
            for b in self.blocks
            if b.get("type") == "image"
            and isinstance(b.get("slack_file"), dict)
            and "id" in b["slack_file"]
        ]


@dataclass
class Ephemeral:
    """A ``chat.postEphemeral`` message (cannot be updated, like on Slack)."""

    channel: str
    user: str
    message_ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    at: float


@dataclass
class FakeFile:
    """A file uploaded through ``files.getUploadURLExternal`` -> POST to its ``upload_url`` ->
    ``files.completeUploadExternal``. ``data`` is None until the bytes arrived; ``channels``
    are where it was shared (a file shared nowhere is private to the uploader)."""

    id: str
    filename: str
    length: int
    alt_txt: str | None
    upload_url: str
    data: bytes | None = None
    title: str | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title or self.filename}


@dataclass
class Trigger:
    trigger_id: str
    user_id: str
    issued_at: float
    used: bool = False


@dataclass
class HookPost:
    """One POST to a ``response_url`` (refused ones too, with their status)."""

    hook_id: str
    body: dict[str, Any]
    at: float
    status: int

    @property
    def accepted(self) -> bool:
        return self.status == 200

    @property
    def text(self) -> str | None:
        t = self.body.get("text")
        return None if t is None else str(t)

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        b = self.body.get("blocks")
        return b if isinstance(b, list) else None

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type") or "ephemeral")

    @property
    def replace_original(self) -> bool:
        return _truthy(self.body.get("replace_original"))

    @property
    def delete_original(self) -> bool:
        return _truthy(self.body.get("delete_original"))

    @property
    def thread_ts(self) -> str | None:
        t = self.body.get("thread_ts")
        return None if t is None else str(t)


@dataclass
class Hook:
    hook_id: str
    issued_at: float
    channel: str | None
    message_ts: str | None
    posts: list[HookPost] = field(default_factory=list)


@dataclass
class Envelope:
    """A Socket Mode envelope the fake sent, and the client's ack once it arrives."""

    envelope: dict[str, Any]
    sent_at: float
    ack: dict[str, Any] | None = None
    acked_at: float | None = None

    @property
    def envelope_id(self) -> str:
        return str(self.envelope["envelope_id"])


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode_json_params(params: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_PARAMS & params.keys():
        value = params[key]
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(json.JSONDecodeError):
                params[key] = json.loads(value)
    return params


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return _decode_json_params(params)


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def _blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = params.get("blocks")
    if blocks is None or blocks == "":
        return []
    if not isinstance(blocks, list) or not all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks
    ):
        raise SlackError("invalid_blocks", response_metadata={"messages": ["malformed blocks"]})
    if len(blocks) > MAX_MESSAGE_BLOCKS:
        raise SlackError(
            "invalid_blocks",
            response_metadata={
                "messages": [f"[ERROR] must provide no more than {MAX_MESSAGE_BLOCKS} items"]
            },
        )
    return blocks


def _plain_len(obj: Any) -> int:
    return len(str(obj.get("text", ""))) if isinstance(obj, dict) else 0


def _view_problems(view: dict[str, Any], expected_type: str) -> list[str]:
    """Slack-side view validation (limits from the Block Kit reference)."""
    problems: list[str] = []
    if view.get("type") != expected_type:
        problems.append(f"[ERROR] must be '{expected_type}' [json-pointer:/view/type]")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.append("[ERROR] missing required field: blocks [json-pointer:/view/blocks]")
        blocks = []
    if len(blocks) > MAX_VIEW_BLOCKS:
        problems.append(
            f"[ERROR] no more than {MAX_VIEW_BLOCKS} items allowed [json-pointer:/view/blocks]"
        )
    if expected_type == "modal":
        if not isinstance(view.get("title"), dict):
            problems.append("[ERROR] missing required field: title [json-pointer:/view/title]")
        elif _plain_len(view["title"]) > MAX_TITLE:
            problems.append(
                f"[ERROR] must be less than {MAX_TITLE + 1} characters [json-pointer:/view/title/text]"
            )
        has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        if has_input and not isinstance(view.get("submit"), dict):
            problems.append(
                "[ERROR] submit is required when an input block is present [json-pointer:/view/submit]"
            )
        for key in ("submit", "close"):
            if isinstance(view.get(key), dict) and _plain_len(view[key]) > MAX_TITLE:
                problems.append(
                    f"[ERROR] must be less than {MAX_TITLE + 1} characters [json-pointer:/view/{key}/text]"
                )
    if len(str(view.get("private_metadata") or "")) > MAX_PRIVATE_METADATA:
        problems.append(
            f"[ERROR] must be less than {MAX_PRIVATE_METADATA + 1} characters "
            "[json-pointer:/view/private_metadata]"
        )
    if len(str(view.get("callback_id") or "")) > MAX_CALLBACK_ID:
        problems.append(
            f"[ERROR] must be less than {MAX_CALLBACK_ID + 1} characters [json-pointer:/view/callback_id]"
        )
    return problems


class FakeSlack:
    """A fake Slack workspace (team ``T0001``, bot user ``UBOT``, app ``A0001``).

    Knobs: ``rate_limit(method, times, retry_after)``, ``fail(method, error, times)``,
    ``delay(method, seconds)``, ``usergroups[...]``, ``trigger_ttl``.
    Helpers: ``calls_to``, ``messages``, ``message``, ``history``, ``thread``, ``responses``,
    ``home``, ``last_view``, ``file``/``files`` (uploads: their bytes, where they are shared),
    ``wait_for``, ``wait_for_message``, ``wait_until``, ``dump``.
    Socket Mode: ``socket_url``, ``send_envelope``, ``send_disconnect``,
    ``drop_socket_connections`` (graceful or ``abrupt``), ``stall_socket_connections``,
    ``wait_for_socket``, ``socket_connections`` (ever opened), ``open_sockets``.
    """

    def __init__(
        self,
        *,
        usergroups: dict[str, list[str]] | None = None,
        trigger_ttl: float = TRIGGER_TTL,
        ack_timeout: float = 5.0,
    ) -> None:
        self.usergroups: dict[str, list[str]] = dict(usergroups or {})
        self.trigger_ttl = trigger_ttl
        self.ack_timeout = ack_timeout

        self.calls: list[Call] = []
        self.channels: dict[str, list[FakeMessage]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.joined: set[str] = set()
        self.triggers: dict[str, Trigger] = {}
        self.hooks: dict[str, Hook] = {}
        self.unknown_hook_posts: list[HookPost] = []
        self.envelopes: list[Envelope] = []
        self.socket_frames: list[dict[str, Any]] = []  # every frame a client sent us
        self.socket_connections = 0  # ever opened
        # (host, port) of each client connection the Web API and response URLs were called on
        self.http_connections: set[tuple[str, int]] = set()
        self.files: dict[str, FakeFile] = {}
        self._uploads: dict[str, str] = {}  # upload id (in the upload_url) -> file id

        self._rate_limits: dict[str, list[int]] = {}
        self._failures: dict[str, list[str]] = {}
        self._delays: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._transports: dict[int, asyncio.Transport] = {}
        self._stalled: set[int] = set()
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = False

        self._methods: dict[str, Callable[[Call], Awaitable[dict[str, Any]]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.join": self._conversations_join,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "apps.connections.open": self._apps_connections_open,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/hooks/{hook_id}", self._hook)
        app.router.add_post("/upload/v1/{upload_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping = True
        await self.drop_socket_connections()
        for fut in self._pending_acks.values():
            fut.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """For ``AsyncWebClient(base_url=...)`` (the trailing slash matters)."""
        return f"{self.url}/api/"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    # ------------------------------------------------------------------ knobs

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls to ``method`` answer HTTP 429 with ``Retry-After``."""
        self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """The next ``times`` calls to ``method`` answer ``{"ok": false, "error": error}``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def delay(self, method: str, seconds: float) -> None:
        """Every later call to ``method`` is answered ``seconds`` late (0 to stop)."""
        if seconds > 0:
            self._delays[method] = seconds
        else:
            self._delays.pop(method, None)

    def new_trigger_id(self, *, user_id: str = "U123", issued_ago: float = 0.0) -> str:
        """A trigger_id ``views.open`` will accept once, within ``trigger_ttl`` seconds;
        ``issued_ago`` back-dates it (to test expiry without sleeping)."""
        n = next(self._ids)
        trigger_id = f"{1_700_000_000 + n}.{n:010d}.{uuid.uuid4().hex[:24]}"
        self.triggers[trigger_id] = Trigger(trigger_id, user_id, time.monotonic() - issued_ago)
        return trigger_id

    def new_response_url(
        self,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        issued_ago: float = 0.0,
    ) -> str:
        """A ``response_url`` served by the fake. Bound to ``(channel, message_ts)`` (a message
        action's url), ``replace_original``/``delete_original`` posts edit/delete that message."""
        hook_id = uuid.uuid4().hex
        self.hooks[hook_id] = Hook(hook_id, time.monotonic() - issued_ago, channel, message_ts)
        return f"{self.url}/hooks/{hook_id}"

    def add_user_message(
        self, channel: str, text: str, *, user: str = "U123", thread_ts: str | None = None
    ) -> FakeMessage:
        """A message written by a person (the bot gets ``cant_update_message`` on it)."""
        msg = self._store_message(channel, text, [], thread_ts, None, "user")
        msg.user, msg.bot_id = user, None
        return msg

    # ------------------------------------------------------------------ queries

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages(self, channel: str) -> list[FakeMessage]:
        """Current state of every message in ``channel`` (thread replies too), in post order."""
        return [m for m in self.channels.get(channel, []) if not m.deleted]

    def thread(self, channel: str, thread_ts: str) -> list[FakeMessage]:
        return [m for m in self.messages(channel) if m.thread_ts == thread_ts and m.ts != thread_ts]

    def message(self, channel: str, ts: str) -> FakeMessage:
        for m in self.channels.get(channel, []):
            if m.ts == ts:
                return m
        raise AssertionError(f"no message {ts} in {channel}\n{self.dump()}")

    def history(self, channel: str, ts: str) -> list[str]:
        """Every text the message had: the post, then each edit."""
        return self.message(channel, ts).texts

    def responses(self, hook_id_or_url: str) -> list[HookPost]:
        """Every POST to that response_url, refused ones included (see ``HookPost.status``)."""
        hook_id = hook_id_or_url.rstrip("/").rsplit("/", 1)[-1]
        if hook_id not in self.hooks:
            raise AssertionError(f"unknown response_url {hook_id_or_url}")
        return list(self.hooks[hook_id].posts)

    def file(self, file_id: str) -> FakeFile:
        if file_id not in self.files:
            raise AssertionError(f"no file {file_id}\n{self.dump()}")
        return self.files[file_id]

    def home(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.home_views:
            raise AssertionError(f"no App Home published for {user_id}\n{self.dump()}")
        return self.home_views[user_id]

    def last_view(self) -> dict[str, Any]:
        """The most recently opened or updated modal."""
        if not self.views:
            raise AssertionError(f"no view opened\n{self.dump()}")
        return next(reversed(self.views.values()))

    @property
    def open_sockets(self) -> int:
        """Open connections that still answer (stalled ones are not counted)."""
        return sum(1 for ws in self._sockets if not ws.closed and id(ws) not in self._stalled)

    def dump(self, last: int = 40) -> str:
        lines = [f"calls ({len(self.calls)}, last {last}):"]
        lines += [f"  {c}" for c in self.calls[-last:]]
        for channel, msgs in self.channels.items():
            lines.append(f"channel {channel}:")
            for m in msgs:
                flags = " (deleted)" if m.deleted else ""
                thread = f" thread={m.thread_ts}" if m.thread_ts else ""
                lines.append(f"  {m.ts}{thread}{flags} {m.user}: {_short(m.texts)}")
        for hook in self.hooks.values():
            if hook.posts:
                lines.append(f"response_url {hook.hook_id}:")
                lines += [f"  {p.status} {_short(p.body)}" for p in hook.posts]
        if self.envelopes:
            lines.append(f"envelopes ({len(self.envelopes)}):")
            lines += [
                f"  {e.envelope['type']} {e.envelope_id} ack={_short(e.ack)}"
                for e in self.envelopes[-last:]
            ]
        lines.append(f"sockets: {self.open_sockets} open, {self.socket_connections} ever opened")
        return "\n".join(lines)

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        probe: Callable[[], T | None],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper's own deadline, reported in the dump
        what: str = "condition",
    ) -> T:
        """Re-run ``probe`` on every state change until it returns something truthy."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            changed = self._changed
            found = probe()
            if found:
                return found
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.dump()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.05))

    async def wait_for(
        self,
        predicate: Callable[[Call], bool],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Call:
        """The first recorded call (answered or not) matching ``predicate``."""
        return await self.wait_until(
            lambda: next((c for c in self.calls if predicate(c)), None),
            timeout=timeout,
            what="a matching call",
        )

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], bool],
        *,
        channel: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> FakeMessage:
        """The first message (current state, in ``channel`` or any) matching ``predicate``."""

        def probe() -> FakeMessage | None:
            chans = [channel] if channel is not None else list(self.channels)
            return next(
                (m for c in chans for m in self.messages(c) if predicate(m)),
                None,
            )

        return await self.wait_until(
            probe, timeout=timeout, what=f"a matching message in {channel or 'any channel'}"
        )

    async def wait_for_socket(
        self,
        connections: int = 1,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Until ``connections`` sockets were ever opened and one is open now."""
        await self.wait_until(
            lambda: self.socket_connections >= connections and self.open_sockets > 0,
            timeout=timeout,
            what=f"socket connection #{connections}",
        )

    # ------------------------------------------------------------------ Web API

    def _connection_seen(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.http_connections.add((str(peer[0]), int(peer[1])))

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self._connection_seen(request)
        params = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        params.pop("token", None)
        call = Call(method, params, time.monotonic(), token, request.method)
        _received(f"Slack {method}", params)
        self.calls.append(call)
        self._notify()
        status, body, headers = await self._answer(call)
        call.status, call.response = status, body
        self._notify()
        return web.json_response(body, status=status, headers=headers)

    async def _answer(self, call: Call) -> tuple[int, dict[str, Any], dict[str, str]]:
        seconds = self._delays.get(call.method)
        if seconds:
            await asyncio.sleep(seconds)
        handler = self._methods.get(call.method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if not call.token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        wants_app_token = call.method in APP_TOKEN_METHODS
        if call.token.startswith("xapp-") != wants_app_token or not call.token.startswith(
            ("xapp-", "xoxb-")
        ):
            error = (
                "not_allowed_token_type"
                if call.token.startswith(("xapp-", "xoxb-", "xoxp-"))
                else "invalid_auth"
            )
            return 200, {"ok": False, "error": error}, {}
        pending = self._rate_limits.get(call.method)
        if pending:
            retry_after = pending.pop(0)
            call.rate_limited = True
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        failures = self._failures.get(call.method)
        if failures:
            return 200, {"ok": False, "error": failures.pop(0)}, {}
        try:
            return 200, {"ok": True, **await handler(call)}, {}
        except SlackError as e:
            return 200, {"ok": False, "error": e.error, **e.extra}, {}

    def _next_ts(self) -> str:
        micros = 1_700_000_000_000_000 + 100 * next(self._ts)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _store_message(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None,
        metadata: dict[str, Any] | None,
        via: str,
    ) -> FakeMessage:
        now = time.monotonic()
        msg = FakeMessage(channel, self._next_ts(), text, blocks, thread_ts, metadata=metadata)
        msg.revisions.append(Revision(text, blocks, now, via))
        self.channels.setdefault(channel, []).append(msg)
        self._notify()
        return msg

    def _edit(self, msg: FakeMessage, text: str, blocks: list[dict[str, Any]], via: str) -> None:
        msg.text, msg.blocks = text, blocks
        msg.revisions.append(Revision(text, blocks, time.monotonic(), via))
        self._notify()

    async def _auth_test(self, call: Call) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": TEAM_NAME,
            "user": BOT_USER_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    async def _chat_post_message(self, call: Call) -> dict[str, Any]:
        p = call.params
        channel = str(p.get("channel") or "")
        if not channel:
            raise SlackError("channel_not_found")
        blocks = _blocks(p)
        text = str(p.get("text") or "")
        if not text and not blocks and not p.get("attachments"):
            raise SlackError("no_text")
        if len(text) > MAX_POST_TEXT:
            raise SlackError("msg_too_long")
        self._check_slack_files(blocks, channel)
        thread_ts = p.get("thread_ts") or None
        metadata = p.get("metadata") if isinstance(p.get("metadata"), dict) else None
        msg = self._store_message(channel, text, blocks, thread_ts, metadata, "chat.postMessage")
        return {"channel": channel, "ts": msg.ts, "message": msg.to_api()}

    async def _chat_update(self, call: Call) -> dict[str, Any]:
        p = call.params
        channel, ts = str(p.get("channel") or ""), str(p.get("ts") or "")
        if not channel:
            raise SlackError("channel_not_found")
        msg = next((m for m in self.channels.get(channel, []) if m.ts == ts), None)
        if msg is None or msg.deleted:
            raise SlackError("message_not_found")
        if not msg.by_bot:
            raise SlackError("cant_update_message")
        blocks = _blocks(p)
        text = str(p.get("text") or "")
        if not text and not blocks and not p.get("attachments"):
            raise SlackError("no_text")
        if len(text) > MAX_UPDATE_TEXT:
            raise SlackError("msg_too_long")
        self._check_slack_files(blocks, channel)
        # Like Slack: text without blocks removes the blocks.
        self._edit(msg, text, blocks, "chat.update")
        return {"channel": channel, "ts": ts, "text": text, "message": msg.to_api()}

    async def _chat_post_ephemeral(self, call: Call) -> dict[str, Any]:
        p = call.params
        channel, user = str(p.get("channel") or ""), str(p.get("user") or "")
        if not channel:
            raise SlackError("channel_not_found")
        if not user:
            raise SlackError("user_not_found")
        blocks = _blocks(p)
        text = str(p.get("text") or "")
        if not text and not blocks and not p.get("attachments"):
            raise SlackError("no_text")
        eph = Ephemeral(
            channel, user, self._next_ts(), text, blocks, p.get("thread_ts"), time.monotonic()
        )
        self.ephemerals.append(eph)
        return {"message_ts": eph.message_ts}

    def _view_arg(self, call: Call, expected_type: str) -> dict[str, Any]:
        view = call.params.get("view")
        if not isinstance(view, dict):
            raise SlackError(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] missing view"]}
            )
        if len(json.dumps(view)) > MAX_VIEW_BYTES:
            raise SlackError("view_too_large")
        problems = _view_problems(view, expected_type)
        if problems:
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        return view

    def _new_hash(self) -> str:
        return f"{int(time.time())}.{uuid.uuid4().int % 10**8:08d}"

    def _full_view(
        self, view: dict[str, Any], view_id: str, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": view["type"],
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": self._new_hash(),
            "title": view.get("title"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": None,
            "root_view_id": previous["root_view_id"] if previous else view_id,
            "app_id": APP_ID,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }
        return out

    def _new_view_id(self) -> str:
        return "V" + uuid.uuid4().hex[:10].upper()

    async def _views_open(self, call: Call) -> dict[str, Any]:
        view = self._view_arg(call, "modal")
        trigger_id = str(call.params.get("trigger_id") or "")
        trigger = self.triggers.get(trigger_id)
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger.used:
            raise SlackError("exchanged_trigger_id")
        if time.monotonic() - trigger.issued_at > self.trigger_ttl:
            raise SlackError("expired_trigger_id")
        trigger.used = True
        if view.get("external_id") and any(
            v.get("external_id") == view["external_id"] for v in self.views.values()
        ):
            raise SlackError("duplicate_external_id")
        full = self._full_view(view, self._new_view_id(), None)
        self.views[full["id"]] = full
        self._notify()
        return {"view": full}

    async def _views_update(self, call: Call) -> dict[str, Any]:
        p = call.params
        view = self._view_arg(call, "modal")
        view_id = p.get("view_id")
        external_id = p.get("external_id")
        current = None
        if view_id:
            current = self.views.get(str(view_id))
        elif external_id:
            current = next(
                (v for v in self.views.values() if v.get("external_id") == external_id), None
            )
        else:
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] view_id or external_id is required"]},
            )
        if current is None:
            raise SlackError("not_found")
        if p.get("hash") and p["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        full = self._full_view(view, current["id"], current)
        full["previous_view_id"] = current.get("previous_view_id")
        # Re-insert so last_view() is the most recently touched one.
        self.views.pop(current["id"])
        self.views[full["id"]] = full
        self._notify()
        return {"view": full}

    async def _views_publish(self, call: Call) -> dict[str, Any]:
        p = call.params
        user_id = str(p.get("user_id") or "")
        if not user_id:
            raise SlackError(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] missing user_id"]}
            )
        view = self._view_arg(call, "home")
        current = self.home_views.get(user_id)
        if p.get("hash") and current is not None and p["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        view_id = current["id"] if current else self._new_view_id()
        full = self._full_view(view, view_id, current)
        self.home_views[user_id] = full
        self._notify()
        return {"view": full}

    async def _usergroups_users_list(self, call: Call) -> dict[str, Any]:
        group = str(call.params.get("usergroup") or "")
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    async def _conversations_join(self, call: Call) -> dict[str, Any]:
        channel = str(call.params.get("channel") or "")
        if not channel:
            raise SlackError("channel_not_found")
        self.joined.add(channel)
        return {
            "channel": {"id": channel, "is_channel": True, "is_member": True},
            "warning": "",
            "response_metadata": {"warnings": []},
        }

    async def _apps_connections_open(self, call: Call) -> dict[str, Any]:
        return {"url": self.socket_url}

    # ------------------------------------------------------------------ files

    def _check_slack_files(
        self, blocks: list[dict[str, Any]], channel: str, sharing: tuple[str, ...] = ()
    ) -> None:
        """An image block may show a file by ``slack_file`` id only when the file was shared in
        that channel (or is being shared by this very message): a private upload is visible to
        the uploader alone, and Slack refuses the block (python-slack-sdk#1658)."""
        for i, block in enumerate(blocks):
            if block.get("type") != "image" or "slack_file" not in block:
                continue
            ref = block["slack_file"]
            file_id = str(ref.get("id") or "") if isinstance(ref, dict) else ""
            known = self.files.get(file_id)
            visible = known is not None and (
                file_id in sharing or (known.completed and channel in known.channels)
            )
            if not visible or not block.get("alt_text"):
                where = f"/blocks/{i}/slack_file" if not visible else f"/blocks/{i}/alt_text"
                problem = "invalid slack file" if not visible else "missing required field"
                raise SlackError(
                    "invalid_blocks",
                    errors=[f"{problem} [json-pointer:{where}]"],
                    response_metadata={"messages": [f"[ERROR] {problem} [json-pointer:{where}]"]},
                )

    async def _files_get_upload_url_external(self, call: Call) -> dict[str, Any]:
        p = call.params
        filename = str(p.get("filename") or "")
        length_text = str(p.get("length") or "")
        if not filename or not length_text.isdigit() or int(length_text) <= 0:
            missing = "filename" if not filename else "length"
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] missing required field: {missing}"]},
            )
        length = int(length_text)
        if length > MAX_UPLOAD_BYTES:
            raise SlackError("file_too_large")
        file_id = "F" + uuid.uuid4().hex[:10].upper()
        upload_id = uuid.uuid4().hex
        url = f"{self.url}/upload/v1/{upload_id}"
        alt = p.get("alt_txt")
        self.files[file_id] = FakeFile(
            file_id, filename, length, None if alt is None else str(alt), url
        )
        self._uploads[upload_id] = file_id
        return {"upload_url": url, "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: the file's bytes, raw or as a multipart ``file`` part."""
        file_id = self._uploads.pop(request.match_info["upload_id"], None)
        if file_id is None:
            # Upload URLs are single-use, like Slack's.
            return web.Response(status=404, text="not found")
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            data = b""
            async for part in reader:
                if isinstance(part, aiohttp.BodyPartReader) and part.name in ("file", "filename"):
                    data = bytes(await part.read())
        else:
            data = await request.read()
        uploaded = self.files[file_id]
        _received("Slack file upload", {"file_id": file_id, "bytes": len(data)})
        if len(data) != uploaded.length:
            # The size announced in files.getUploadURLExternal is what Slack accepts.
            self._uploads[request.match_info["upload_id"]] = file_id
            return web.Response(
                status=400, text=f"length {len(data)} differs from the {uploaded.length} announced"
            )
        uploaded.data = data
        self._notify()
        return web.Response(status=200, text=f"OK - {len(data)}")

    async def _files_complete_upload_external(self, call: Call) -> dict[str, Any]:
        p = call.params
        listed = p.get("files")
        if not isinstance(listed, list) or not listed:
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: files"]},
            )
        chosen: list[FakeFile] = []
        for item in listed:
            file_id = str(item.get("id") or "") if isinstance(item, dict) else ""
            found = self.files.get(file_id)
            # A file whose bytes never reached its upload URL cannot be completed.
            if found is None or found.data is None or found.completed:
                raise SlackError("file_not_found")
            chosen.append(found)
        channels = [str(p["channel_id"])] if p.get("channel_id") else []
        channels += [c for c in str(p.get("channels") or "").split(",") if c]
        comment = str(p.get("initial_comment") or "")
        # Like Slack: an initial_comment wins and the blocks are ignored.
        blocks = [] if comment else _blocks(p)
        ids = tuple(f.id for f in chosen)
        for channel in channels:
            self._check_slack_files(blocks, channel, sharing=ids)
        for item, found in zip(listed, chosen, strict=True):
            found.title = str(item.get("title") or found.filename)
            found.completed = True
            found.channels.extend(channels)
        thread_ts = p.get("thread_ts") or None
        for channel in channels:
            msg = self._store_message(
                channel, comment, blocks, thread_ts, None, "files.completeUploadExternal"
            )
            msg.files = list(ids)
        self._notify()
        return {"files": [f.to_api() for f in chosen]}

    # ------------------------------------------------------------------ response_url

    async def _hook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook_id"]
        self._connection_seen(request)
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            parsed = {"_raw": raw.decode("utf-8", "replace")}
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {"_raw": parsed}
        body = _decode_json_params(body)
        _received("Slack response_url", body)
        now = time.monotonic()
        hook = self.hooks.get(hook_id)
        if hook is None:
            self.unknown_hook_posts.append(HookPost(hook_id, body, now, 404))
            self._notify()
            return web.Response(status=404, text="no_service")
        if now - hook.issued_at > RESPONSE_URL_TTL:
            status, text = 404, "expired_url"
        elif len(hook.posts) >= RESPONSE_URL_MAX_POSTS:
            status, text = 404, "used_url"
        else:
            status, text = 200, "ok"
        hook.posts.append(HookPost(hook_id, body, now, status))
        if status == 200 and hook.channel is not None and hook.message_ts is not None:
            original = next(
                (m for m in self.channels.get(hook.channel, []) if m.ts == hook.message_ts), None
            )
            if original is not None and not original.deleted:
                if _truthy(body.get("delete_original")):
                    original.deleted = True
                elif _truthy(body.get("replace_original")):
                    raw_blocks = body.get("blocks")
                    blocks = raw_blocks if isinstance(raw_blocks, list) else []
                    self._edit(original, str(body.get("text") or ""), blocks, "response_url")
        self._notify()
        return web.Response(status=status, text=text)

    # ------------------------------------------------------------------ Socket Mode

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return web.Response(status=503, text="shutting down")
        # autoping off so that stall_socket_connections() can stop answering pings.
        ws = web.WebSocketResponse(autoping=False, timeout=2.0)
        await ws.prepare(request)
        self.socket_connections += 1
        self._sockets.append(ws)
        if request.transport is not None:
            self._transports[id(ws)] = request.transport
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {
                    "host": "fake-slack",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._notify()
        try:
            async for msg in ws:
                if id(ws) in self._stalled:
                    continue
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except json.JSONDecodeError:
                    frame = {"_raw": msg.data}
                if not isinstance(frame, dict):
                    frame = {"_raw": frame}
                self.socket_frames.append(frame)
                _received("Slack Socket Mode ack", frame)
                envelope_id = frame.get("envelope_id")
                fut = self._pending_acks.pop(str(envelope_id), None) if envelope_id else None
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                self._notify()
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._transports.pop(id(ws), None)
            self._stalled.discard(id(ws))
            self._notify()
        return ws

    def _live_socket(self) -> web.WebSocketResponse | None:
        live = [ws for ws in self._sockets if not ws.closed and id(ws) not in self._stalled]
        return live[-1] if live else None

    async def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = True,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send an envelope (``slash_commands``, ``interactive``, ``events_api``) to the newest
        open connection (waiting for one if needed) and return the client's ack frame."""
        limit = self.ack_timeout if timeout is None else timeout
        await self.wait_until(self._live_socket, timeout=limit, what="an open socket")
        ws = self._live_socket()
        assert ws is not None
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry_attempt is not None:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason or ""
        record = Envelope(envelope, time.monotonic())
        self.envelopes.append(record)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[record.envelope_id] = fut
        await ws.send_json(envelope)
        try:
            ack = await asyncio.wait_for(fut, limit)
        except TimeoutError:
            self._pending_acks.pop(record.envelope_id, None)
            raise AssertionError(
                f"no ack for {type_} envelope {record.envelope_id} within {limit}s\n{self.dump()}"
            ) from None
        record.ack, record.acked_at = ack, time.monotonic()
        return ack

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's polite ``disconnect`` frame (the SDK reconnects on it)."""
        ws = self._live_socket()
        if ws is None:
            raise AssertionError(f"no open socket\n{self.dump()}")
        await ws.send_json(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        )

    def stall_socket_connections(self) -> int:
        """Keep the currently open connections up at TCP level but make them dead: pings go
        unanswered, client frames are ignored and no envelope is sent on them (a hung peer or a
        silently dropped route). Returns how many were stalled."""
        stalled = [ws for ws in self._sockets if not ws.closed and id(ws) not in self._stalled]
        self._stalled.update(id(ws) for ws in stalled)
        self._notify()
        return len(stalled)

    async def drop_socket_connections(self, *, abrupt: bool = False) -> int:
        """Close every open connection server-side; returns how many were closed. By default
        with a WebSocket CLOSE frame (code 1001), as a server going away does; ``abrupt=True``
        cuts the TCP connection without one (a network failure)."""
        sockets = [ws for ws in self._sockets if not ws.closed]
        self._sockets = [ws for ws in self._sockets if ws not in sockets]
        if abrupt:
            for ws in sockets:
                transport = self._transports.pop(id(ws), None)
                if transport is not None:
                    transport.abort()
        else:
            await asyncio.gather(
                *(
                    ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped by test")
                    for ws in sockets
                ),
                return_exceptions=True,
            )
        self._notify()
        return len(sockets)
