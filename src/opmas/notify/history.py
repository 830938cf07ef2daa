"""The notifier's tables: routes from `notification_rules`, the queue in
`notification_history` (pending -> sent | failed). Callers own the transaction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opmas.messages import Finding
from opmas.models.base import SEVERITIES
from opmas.models.findings import Finding as FindingRow
from opmas.models.notify import NotificationChannel, NotificationHistory, NotificationRule
from opmas.notify.render import finding_payload
from opmas.notify.routing import Route, channels_for
from opmas.settings import NotifierSettings

NH = NotificationHistory
INSERT_CHUNK = 1000
ERROR_CHARS = 2000


async def load_routes(session: AsyncSession) -> list[Route]:
    """Every enabled rule with the ids of its active channels, in id order."""
    rules = await session.scalars(
        select(NotificationRule)
        .where(NotificationRule.enabled)
        .options(selectinload(NotificationRule.channels))
        .order_by(NotificationRule.id)
    )
    return [
        Route(
            rule_id=rule.id,
            min_severity=rule.min_severity,
            max_severity=rule.max_severity,
            domains=tuple(rule.domains or ()),
            categories=tuple(rule.categories or ()),
            channel_ids=tuple(c.id for c in rule.channels if c.is_active),
            digest_interval_s=float(rule.digest_interval_s),
        )
        for rule in rules
    ]


async def queue_findings(
    session: AsyncSession, findings: Sequence[Finding], routes: Sequence[Route]
) -> int:
    """Insert one pending row per (finding, routed channel), first sight only; return how
    many are new. A finding id seen before (redelivery, burst update) adds nothing."""
    channel_names = await _channel_names(session, routes)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[uuid.UUID, int]] = set()
    for finding in findings:
        finding_uuid = uuid.UUID(finding.finding_id)
        for channel_id, rule_id in channels_for(routes, finding).items():
            if (finding_uuid, channel_id) in seen or channel_id not in channel_names:
                continue
            seen.add((finding_uuid, channel_id))
            rows.append(_pending(finding, channel_id, channel_names[channel_id], rule_id))
    return await _insert(session, rows)


def _pending(finding: Finding, channel_id: int, channel: str, rule_id: int) -> dict[str, Any]:
    return {
        "finding_uuid": uuid.UUID(finding.finding_id),
        "channel_id": channel_id,
        "channel": channel,
        "notification_type": "finding",
        "status": "pending",
        "rule_id": rule_id,
        "payload": finding_payload(finding),
    }


async def _insert(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert pending rows, skipping (finding, channel) pairs already queued; return how many
    are new."""
    new = 0
    for start in range(0, len(rows), INSERT_CHUNK):
        statement = (
            insert(NH)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["finding_uuid", "channel_id"])
            .returning(NH.id)
        )
        new += len((await session.scalars(statement)).all())
    return new


async def backfill(
    session: AsyncSession, routes: Sequence[Route], *, since: datetime, limit: int
) -> int:
    """Queue the stored findings still `new` and opened since `since` that `routes` send to a
    channel but that are not queued there yet (they came while no rule routed them): at most
    `limit` per channel, the newest. Returns how many rows are new."""
    channel_names = await _channel_names(session, routes)
    chosen: dict[int, dict[uuid.UUID, tuple[FindingRow, int]]] = defaultdict(dict)
    for route in routes:
        for row in await session.scalars(_backfill_query(route, since, limit)):
            for channel_id in route.channel_ids:
                chosen[channel_id].setdefault(row.finding_uuid, (row, route.rule_id))
    rows: list[dict[str, Any]] = []
    for channel_id, found in chosen.items():
        if channel_id not in channel_names:
            continue
        newest = sorted(found.values(), key=lambda pair: pair[0].created_at, reverse=True)
        for row, rule_id in newest[:limit]:
            rows.append(_pending(_message(row), channel_id, channel_names[channel_id], rule_id))
    return await _insert(session, rows)


def _backfill_query(route: Route, since: datetime, limit: int) -> Select[FindingRow]:
    """The newest `limit` new findings since `since` that `route` matches (as `matches` does)."""
    low, high = SEVERITIES.index(route.min_severity), SEVERITIES.index(route.max_severity)
    query = select(FindingRow).where(
        FindingRow.created_at >= since,
        FindingRow.status == "new",
        FindingRow.severity.in_(SEVERITIES[low : high + 1]),
        # a finding of `opmas replay` without --notify notifies nobody (as `matches` says)
        FindingRow.details.is_(None) | ~FindingRow.details.contains({"replay": True}),
    )
    if route.domains:
        query = query.where(FindingRow.domain.in_(route.domains))
    if route.categories:
        query = query.where(
            FindingRow.finding_type.in_(route.categories)
            | FindingRow.rule_name.in_(route.categories)
        )
    return query.order_by(FindingRow.created_at.desc()).limit(limit)


def _message(row: FindingRow) -> Finding:
    """A stored finding as the message the notifier would have read on findings.<domain>."""
    return Finding(
        finding_id=str(row.finding_uuid),
        agent_name=row.agent_name or "",
        finding_ts_utc=_iso(row.finding_ts or row.created_at),
        device_hostname=row.device_hostname,
        device_ip=str(row.device_ip) if row.device_ip is not None else None,
        severity=row.severity,
        finding_type=row.finding_type,
        rule_name=row.rule_name or "",
        description=row.description or "",
        details=dict(row.details or {}),
        evidence_event_ids=[str(event_id) for event_id in row.evidence_event_ids or ()],
        domain=row.domain or "other",
        count=row.count,
        last_seen_utc=_iso(row.last_seen_at) if row.last_seen_at else None,
    )


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _channel_names(session: AsyncSession, routes: Sequence[Route]) -> dict[int, str]:
    ids = {channel_id for route in routes for channel_id in route.channel_ids}
    if not ids:
        return {}
    rows = await session.execute(
        select(NotificationChannel.id, NotificationChannel.name).where(
            NotificationChannel.id.in_(ids)
        )
    )
    return {row.id: row.name for row in rows}


def _due(now: datetime) -> Any:
    return (NH.status == "pending") & or_(NH.next_attempt_at.is_(None), NH.next_attempt_at <= now)


async def due_channel_ids(session: AsyncSession, now: datetime) -> list[int]:
    """Active channels with at least one pending row due at `now`."""
    rows = await session.scalars(
        select(NH.channel_id)
        .join(NotificationChannel, NotificationChannel.id == NH.channel_id)
        .where(_due(now), NotificationChannel.is_active)
        .distinct()
    )
    return sorted(channel_id for channel_id in rows if channel_id is not None)


async def lock_channel(session: AsyncSession, channel_id: int) -> NotificationChannel | None:
    """The active channel, locked for this transaction; None if inactive, gone, or another
    replica holds it (it is sending on it now)."""
    channel: NotificationChannel | None = await session.scalar(
        select(NotificationChannel)
        .where(NotificationChannel.id == channel_id, NotificationChannel.is_active)
        .with_for_update(skip_locked=True)
    )
    return channel


async def last_sent_at(session: AsyncSession, channel_id: int) -> datetime | None:
    """When something was last sent on the channel."""
    value: datetime | None = await session.scalar(
        select(func.max(NH.sent_at)).where(NH.channel_id == channel_id, NH.status == "sent")
    )
    return value


async def lock_due_rows(
    session: AsyncSession, channel_id: int, now: datetime, limit: int
) -> list[NotificationHistory]:
    """The channel's pending rows due at `now`, oldest first, locked (SKIP LOCKED)."""
    rows = await session.scalars(
        select(NH)
        .where(NH.channel_id == channel_id, _due(now))
        .order_by(NH.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def mark_sent(
    session: AsyncSession, rows: Sequence[NotificationHistory], sent_at: datetime
) -> uuid.UUID:
    """Mark `rows` sent together under one new digest id, which is returned."""
    digest_id = uuid.uuid4()
    await session.execute(
        update(NH)
        .where(NH.id.in_([row.id for row in rows]))
        .values(status="sent", sent_at=sent_at, digest_id=digest_id, attempts=NH.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return digest_id


async def mark_failed(
    session: AsyncSession,
    rows: Sequence[NotificationHistory],
    reason: str,
    now: datetime,
    settings: NotifierSettings,
    *,
    final: bool = False,
) -> int:
    """Count a failed attempt on `rows`: retry at now + backoff * 2**(attempts-1), or
    `failed` after max_attempts (at once when `final`). Returns how many rows are now failed."""
    by_attempts: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_attempts[row.attempts + 1].append(row.id)
    failed = 0
    for attempts, ids in by_attempts.items():
        last = final or attempts >= settings.max_attempts
        delay = timedelta(seconds=settings.retry_backoff_s * 2 ** (attempts - 1))
        await session.execute(
            update(NH)
            .where(NH.id.in_(ids))
            .values(
                attempts=attempts,
                error_message=reason[:ERROR_CHARS],
                status="failed" if last else "pending",
                next_attempt_at=None if last else now + delay,
            )
            .execution_options(synchronize_session=False)
        )
        failed += len(ids) if last else 0
    return failed
