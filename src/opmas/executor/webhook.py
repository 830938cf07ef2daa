"""`webhook` actions: the action and its finding POSTed as signed JSON to a webhook channel.

The body is `{"action": <Action message>, "finding": <finding row or null>}`, signed with the
channel's secret (`opmas.notify.signing`); any 2xx answer is a success.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.errors import ActionError
from opmas.executor.attempts import AttemptFailed
from opmas.messages import Action
from opmas.models import Finding, IntendedAction, NotificationChannel
from opmas.notify.signing import signed_headers

MAX_BODY_CHARS = 4096


async def webhook_channel(session: AsyncSession, config: dict[str, Any]) -> NotificationChannel:
    """The active webhook channel named by `config["channel"]`.

    Raises:
        ActionError: no name, no such active webhook channel, or it has no URL or secret.
    """
    name = config.get("channel")
    if not isinstance(name, str) or not name:
        raise ActionError("argument 'channel' must name a webhook notification channel")
    channel = await session.scalar(
        select(NotificationChannel).where(NotificationChannel.name == name)
    )
    if channel is None or not channel.is_active or channel.channel_type != "webhook":
        raise ActionError(f"no active webhook channel named {name!r}")
    if not isinstance(channel.config.get("url"), str) or not channel.encrypted_secret:
        raise ActionError(f"webhook channel {name!r} needs a url and a secret")
    return channel


async def finding_of(session: AsyncSession, row: IntendedAction) -> dict[str, Any] | None:
    """The action's finding as a JSON-ready dict of its columns, or None."""
    if row.finding_id is None:
        return None
    finding = await session.get(Finding, (row.finding_id, row.finding_created_at))
    if finding is None:
        return None
    columns = {column.key: getattr(finding, column.key) for column in Finding.__mapper__.columns}
    plain: dict[str, Any] = msgspec.to_builtins(columns)
    return plain


def webhook_body(message: Action, finding: dict[str, Any] | None) -> bytes:
    """The JSON body a webhook action sends."""
    return msgspec.json.encode({"action": message, "finding": finding})


async def post_signed(
    url: str, secret: bytes, body: bytes, *, connect_timeout_s: float
) -> dict[str, Any]:
    """POST `body` with signature headers; {status_code, body, duration_s} on a 2xx answer.

    Raises:
        AttemptFailed: the answer was not 2xx (result attached).
        httpx.HTTPError: no answer (connection refused, reset).
    """
    started = time.monotonic()
    timeout = httpx.Timeout(None, connect=connect_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        response = await client.post(url, content=body, headers=signed_headers(secret, body))
    result = {
        "status_code": response.status_code,
        "body": response.text[:MAX_BODY_CHARS],
        "duration_s": round(time.monotonic() - started, 3),
    }
    if not response.is_success:
        raise AttemptFailed(f"webhook answered HTTP {response.status_code}", result)
    return result
