"""Webhook channel: the message's JSON POSTed to the configured URL, HMAC-signed with the
channel's secret (see `opmas.notify.signing`)."""

from __future__ import annotations

import json

import httpx

from opmas.notify.errors import DeliveryError
from opmas.notify.render import Message
from opmas.notify.signing import signed_headers


def webhook_body(message: Message) -> bytes:
    """The bytes that are signed and sent: the message's JSON body, compact UTF-8."""
    return json.dumps(message.body, ensure_ascii=False, separators=(",", ":")).encode()


async def send_webhook(
    http: httpx.AsyncClient, url: str, secret: str | None, message: Message
) -> None:
    """POST the signed JSON to `url`. Raises DeliveryError on a transport error or non-2xx."""
    body = webhook_body(message)
    headers = (
        signed_headers(secret.encode(), body) if secret else {"Content-Type": "application/json"}
    )
    try:
        response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"webhook {url}: {type(exc).__name__}: {exc}") from exc
    if not response.is_success:
        raise DeliveryError(f"webhook {url} answered {response.status_code}")
