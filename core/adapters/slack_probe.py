"""Slack's answer to snapbot's tokens (``snapbot doctor``), over plain HTTP: the core knows no
Slack SDK, and two Web API calls need none."""

from __future__ import annotations

from typing import Any

import aiohttp

from core.errors import InvalidInput
from core.services.doctor import SlackAuth

SLACK_API_URL = "https://slack.com/api/"
TIMEOUT_SECONDS = 15.0


class SlackTokenProbe:
    def __init__(self, api_url: str | None = None) -> None:
        self._api_url = (api_url or SLACK_API_URL).rstrip("/") + "/"

    async def auth_test(self, token: str) -> SlackAuth:
        body, headers = await self._call("auth.test", token)
        if not body.get("ok"):
            return SlackAuth(error=str(body.get("error") or "unknown error"))
        granted = headers.get("x-oauth-scopes")
        scopes = (
            None
            if granted is None
            else frozenset(s.strip() for s in granted.split(",") if s.strip())
        )
        return SlackAuth(error=None, team=str(body.get("team") or ""), scopes=scopes)

    async def open_socket(self, app_token: str) -> str | None:
        # Only asks for a Socket Mode URL; the connection itself is left unopened, so a running
        # snapbot's sockets are not disturbed.
        body, _ = await self._call("apps.connections.open", app_token)
        return None if body.get("ok") else str(body.get("error") or "unknown error")

    async def _call(self, method: str, token: str) -> tuple[dict[str, Any], dict[str, str]]:
        url = self._api_url + method
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as s,
                s.post(url, headers={"Authorization": f"Bearer {token}"}) as response,
            ):
                body = await response.json(content_type=None)
                headers = {k.lower(): v for k, v in response.headers.items()}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise InvalidInput(f"cannot reach Slack at {url}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidInput(f"Slack at {url} answered something that is not a JSON object")
        return body, headers
