"""Answers through a request's ``response_url``, over the Web API client's HTTP session.

slack_sdk opens (and closes) a session, so a TCP and TLS connection, for every call made without
one: one shared session keeps connections to Slack open between the answers of a burst.
"""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient


def response_url_client(client: AsyncWebClient, url: str) -> AsyncWebhookClient:
    """A webhook client for ``url`` sharing ``client``'s session (a new one per call when the
    client has none)."""
    return AsyncWebhookClient(url, session=client.session)
