"""One message to one channel: the dispatcher over the email, Slack and webhook protocols.

The channel's secret is decrypted here, in memory, just before the send, and goes nowhere else.
"""

from __future__ import annotations

import httpx

from opmas.crypto import SecretBox
from opmas.errors import SecretError
from opmas.models.notify import NotificationChannel
from opmas.notify.email import send_email
from opmas.notify.errors import ChannelCrash, DeliveryError
from opmas.notify.render import Message
from opmas.notify.slack import send_slack
from opmas.notify.webhook import send_webhook
from opmas.settings import NotifierSettings

__all__ = ["ChannelCrash", "DeliveryError", "deliver"]
MASK = "**********"


async def deliver(
    channel: NotificationChannel,
    message: Message,
    *,
    box: SecretBox,
    http: httpx.AsyncClient,
    settings: NotifierSettings,
) -> None:
    """Send `message` on `channel`. Raises DeliveryError with the reason (no secret in it);
    ChannelCrash when the protocol code raised anything else."""
    secret = _secret(channel, box)
    try:
        await _send(channel, message, secret, http, settings)
    except DeliveryError:
        raise
    except Exception as exc:  # any bug of one channel becomes its failure, never the loop's
        text = f"{type(exc).__name__}: {exc}"
        raise ChannelCrash(text.replace(secret, MASK) if secret else text) from None


async def _send(
    channel: NotificationChannel,
    message: Message,
    secret: str | None,
    http: httpx.AsyncClient,
    settings: NotifierSettings,
) -> None:
    config = channel.config or {}
    if channel.channel_type == "email":
        await send_email(config, secret, message, timeout_s=settings.send_timeout_s)
    elif channel.channel_type == "slack":
        if not secret:
            raise DeliveryError("Slack channel has no webhook URL (its secret)")
        await send_slack(http, secret, message)
    elif channel.channel_type == "webhook":
        url = config.get("url")
        if not url:
            raise DeliveryError("webhook channel has no url")
        await send_webhook(http, str(url), secret, message)
    else:
        raise DeliveryError(f"unknown channel type {channel.channel_type!r}")


def _secret(channel: NotificationChannel, box: SecretBox) -> str | None:
    if not channel.encrypted_secret:
        return None
    try:
        return box.decrypt(channel.encrypted_secret)
    except SecretError as exc:
        raise DeliveryError(f"channel {channel.name}: {exc}") from exc
