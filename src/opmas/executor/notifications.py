"""`notify` actions: one pending `notification_history` row per channel, which the notifier
component delivers; the executor never talks to a mail server or Slack itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.errors import ActionError
from opmas.messages import Action
from opmas.models import NotificationChannel, NotificationHistory

NOTIFICATION_TYPE = "action"


async def channels_of(session: AsyncSession, config: dict[str, Any]) -> list[NotificationChannel]:
    """The active channels named by `config["channels"]`, or every active channel.

    Raises:
        ActionError: `channels` is not a list of names, a name is not an active channel, or
            there is no active channel at all.
    """
    names = config.get("channels")
    query = select(NotificationChannel).where(NotificationChannel.is_active.is_(True))
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ActionError("argument 'channels' must be a list of channel names")
        query = query.where(NotificationChannel.name.in_(names))
    channels = list((await session.scalars(query.order_by(NotificationChannel.name))).all())
    missing = sorted(set(names or ()) - {channel.name for channel in channels})
    if missing:
        raise ActionError(f"no active notification channel named {missing[0]!r}")
    if not channels:
        raise ActionError("there is no active notification channel to notify")
    return channels


def _text_arg(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str):
        raise ActionError(f"argument {key!r} must be text")
    return value


async def queue_notifications(
    session: AsyncSession,
    message: Action,
    channels: Sequence[NotificationChannel],
) -> list[str]:
    """Insert one pending row per channel for action `message`; flush, do not commit."""
    config = message.action_config
    default = message.description or f"action {message.action_id} ({message.action_type})"
    payload = {
        "subject": _text_arg(config, "subject", default),
        "text": _text_arg(config, "text", default),
        "action": msgspec.to_builtins(message),
    }
    for channel in channels:
        session.add(
            NotificationHistory(
                incident_id=message.incident_id,
                channel_id=channel.id,
                channel=channel.name,
                notification_type=NOTIFICATION_TYPE,
                status="pending",
                action_id=message.action_id,
                payload=payload,
            )
        )
    await session.flush()
    return [channel.name for channel in channels]
