"""Slack channel: an incoming webhook gets `{"text": ...}`; its URL is the channel's secret."""

from __future__ import annotations

import httpx

from opmas.notify.errors import DeliveryError
from opmas.notify.render import Message


def slack_escape(text: str) -> str:
    """`&`, `<` and `>` as Slack wants them escaped, so text from data (`<!channel>`, `<url|x>`)
    is shown as written, never read as a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(message: Message) -> str:
    """The subject in bold, then the text (Slack mrkdwn), both escaped."""
    return f"*{slack_escape(message.subject)}*\n{slack_escape(message.text)}"


async def send_slack(http: httpx.AsyncClient, url: str, message: Message) -> None:
    """POST the message to the webhook `url`. Raises DeliveryError, whose text never holds
    the URL (it is a secret)."""
    try:
        response = await http.post(url, json={"text": slack_text(message)})
    except httpx.HTTPError as exc:
        raise DeliveryError(f"Slack webhook: {type(exc).__name__}") from None
    if not response.is_success:
        raise DeliveryError(f"Slack webhook answered {response.status_code}")
