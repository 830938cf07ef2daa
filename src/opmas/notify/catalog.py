"""Channels, rules and history as `opmas notify` manages them; no view ever holds a secret.
Callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opmas.errors import Conflict, NotFound
from opmas.models.base import SEVERITIES
from opmas.models.notify import (
    CHANNEL_TYPES,
    NotificationChannel,
    NotificationHistory,
    NotificationRule,
)

HISTORY_FIELDS = (
    "id",
    "status",
    "channel",
    "notification_type",
    "attempts",
    "finding_uuid",
    "action_id",
    "digest_id",
    "error_message",
    "created_at",
    "sent_at",
)


async def add_channel(
    session: AsyncSession,
    name: str,
    channel_type: str,
    config: dict[str, Any],
    encrypted_secret: str | None,
) -> NotificationChannel:
    """Create a channel. Raises Conflict when the name is taken, ValueError on a bad type."""
    if channel_type not in CHANNEL_TYPES:
        raise ValueError(f"channel type must be one of {', '.join(CHANNEL_TYPES)}")
    if await _channel(session, name) is not None:
        raise Conflict(f"a channel named {name} exists")
    channel = NotificationChannel(
        name=name, channel_type=channel_type, config=config, encrypted_secret=encrypted_secret
    )
    session.add(channel)
    await session.flush()
    return channel


async def get_channel(session: AsyncSession, name: str) -> NotificationChannel:
    """The channel named `name`. Raises NotFound."""
    channel = await _channel(session, name)
    if channel is None:
        raise NotFound(f"no channel named {name}")
    return channel


async def _channel(session: AsyncSession, name: str) -> NotificationChannel | None:
    found: NotificationChannel | None = await session.scalar(
        select(NotificationChannel).where(NotificationChannel.name == name)
    )
    return found


async def list_channels(session: AsyncSession) -> list[dict[str, Any]]:
    """Every channel as a view: name, type, config, active, `secret: set|unset`."""
    channels = await session.scalars(select(NotificationChannel).order_by(NotificationChannel.name))
    return [channel_view(channel) for channel in channels]


def channel_view(channel: NotificationChannel) -> dict[str, Any]:
    """What may be shown of a channel: never its secret, only whether it has one."""
    return {
        "name": channel.name,
        "type": channel.channel_type,
        "active": channel.is_active,
        "config": dict(channel.config or {}),
        "secret": "set" if channel.encrypted_secret else "unset",
    }


async def remove_channel(session: AsyncSession, name: str) -> None:
    """Delete a channel (its history keeps the name). Raises NotFound."""
    await session.delete(await get_channel(session, name))
    await session.flush()


async def add_rule(
    session: AsyncSession,
    name: str,
    *,
    min_severity: str,
    max_severity: str,
    domains: Sequence[str],
    categories: Sequence[str],
    channels: Sequence[str],
    digest_interval_s: int,
) -> NotificationRule:
    """Create a rule sending to `channels` (names). Raises Conflict, NotFound, ValueError."""
    for severity in (min_severity, max_severity):
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    if SEVERITIES.index(min_severity) > SEVERITIES.index(max_severity):
        raise ValueError("min severity is above max severity")
    if await session.scalar(select(NotificationRule.id).where(NotificationRule.name == name)):
        raise Conflict(f"a rule named {name} exists")
    rule = NotificationRule(
        name=name,
        min_severity=min_severity,
        max_severity=max_severity,
        domains=list(domains),
        categories=list(categories),
        digest_interval_s=digest_interval_s,
        channels=[await get_channel(session, channel) for channel in channels],
    )
    session.add(rule)
    await session.flush()
    return rule


async def list_rules(session: AsyncSession) -> list[dict[str, Any]]:
    """Every rule as a view, with the names of its channels."""
    rules = await session.scalars(
        select(NotificationRule)
        .options(selectinload(NotificationRule.channels))
        .order_by(NotificationRule.name)
    )
    return [
        {
            "name": rule.name,
            "enabled": rule.enabled,
            "min_severity": rule.min_severity,
            "max_severity": rule.max_severity,
            "domains": list(rule.domains or ()),
            "categories": list(rule.categories or ()),
            "channels": sorted(channel.name for channel in rule.channels),
            "digest_interval_s": rule.digest_interval_s,
        }
        for rule in rules
    ]


async def remove_rule(session: AsyncSession, name: str) -> None:
    """Delete a rule. Raises NotFound."""
    result = await session.execute(
        delete(NotificationRule).where(NotificationRule.name == name).returning(NotificationRule.id)
    )
    if result.first() is None:
        raise NotFound(f"no rule named {name}")


async def list_history(
    session: AsyncSession, *, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest history rows (optionally of one status) as JSON-ready views."""
    query = select(NotificationHistory).order_by(NotificationHistory.id.desc()).limit(limit)
    if status:
        query = query.where(NotificationHistory.status == status)
    rows = await session.scalars(query)
    return [_history_view(row) for row in rows]


def _history_view(row: NotificationHistory) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for field in HISTORY_FIELDS:
        value = getattr(row, field)
        if isinstance(value, datetime):
            value = value.isoformat()
        view[field] = value if value is None or isinstance(value, (int, str)) else str(value)
    view["subject"] = (row.payload or {}).get("subject")
    return view
