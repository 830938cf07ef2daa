"""Findings that came while no rule routed them are sent once a rule and channel exist,
within the bound (recent, still new, at most `backfill_max` per channel)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.db.engine import session_factory
from opmas.models.findings import Finding as FindingRow
from opmas.notify.service import Notifier
from opmas.settings import Settings
from tests.integration.notify.peers import HttpReceiver
from tests.integration.notify.test_service import _history, _items, _running, _seed, _until


def _stored(opened: datetime, severity: str = "error", status: str = "new") -> FindingRow:
    return FindingRow(
        created_at=opened,
        finding_ts=opened,
        last_seen_at=opened,
        finding_uuid=uuid.uuid4(),
        domain="security",
        agent_name="SecurityAgent",
        rule_name="ssh-brute-force-fast",
        device_hostname="router-1",
        device_ip="192.168.1.1",
        finding_type="SshBruteForce",
        severity=severity,
        description="10 failed SSH logins from 203.0.113.7",
        details={"ip": "203.0.113.7"},
        status=status,
        count=10,
    )


async def _store(engine: AsyncEngine, rows: list[FindingRow]) -> list[str]:
    async with session_factory(engine)() as session:
        session.add_all(rows)
        await session.commit()
    return [str(row.finding_uuid) for row in rows]


async def test_findings_stored_before_any_rule_are_sent_as_one_digest_when_a_rule_appears(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    now = datetime.now(UTC)
    recent = await _store(engine, [_stored(now - timedelta(minutes=m)) for m in (1, 20, 300)])
    await _store(
        engine,
        [
            _stored(now - timedelta(hours=30)),  # older than backfill_s (24 h)
            _stored(now - timedelta(minutes=5), status="acknowledged"),  # someone saw it
            _stored(now - timedelta(minutes=5), severity="info"),  # below the rule
        ],
    )
    async with _running(engine, bus, notifier_settings) as notifier:
        assert await notifier.backfill() == 0  # no rule yet: nothing to send them to
        await _seed(engine, notifier_settings, http_receiver)

        async def sent() -> bool:
            rows = await _history(engine)
            return len(rows) == 3 and all(row["status"] == "sent" for row in rows)

        await _until(sent)
        assert await notifier.backfill() == 0
    (request,) = http_receiver.on("/hook")
    items = _items(request.json())
    assert sorted(item["finding"]["finding_id"] for item in items) == sorted(recent)
    assert items[0]["finding"]["description"] == "10 failed SSH logins from 203.0.113.7"
    async with Notifier(engine, bus, notifier_settings) as restarted:
        assert await restarted.backfill() == 0  # a restart sends nothing twice


async def test_backfill_queues_at_most_backfill_max_per_channel_the_newest(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    now = datetime.now(UTC)
    quick = notifier_settings.notifier.model_copy(update={"backfill_max": 2})
    settings = notifier_settings.model_copy(update={"notifier": quick})
    ids = await _store(engine, [_stored(now - timedelta(minutes=m)) for m in range(1, 8)])
    await _seed(engine, settings, http_receiver, slack=True)
    async with Notifier(engine, bus, settings) as notifier:
        assert await notifier.backfill() == 4  # 2 on the webhook, 2 on Slack
        assert await notifier.backfill() == 0
    rows = await _history(engine)
    for channel in ("hook", "chat"):
        queued = {str(r["finding_uuid"]) for r in rows if r["channel"] == channel}
        assert queued == set(ids[:2])


async def test_backfill_off_queues_nothing(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    off = notifier_settings.notifier.model_copy(update={"backfill_s": 0})
    settings = notifier_settings.model_copy(update={"notifier": off})
    await _store(engine, [_stored(datetime.now(UTC))])
    await _seed(engine, settings, http_receiver)
    async with Notifier(engine, bus, settings) as notifier:
        assert await notifier.backfill() == 0
    assert await _history(engine) == []


async def test_backfill_skips_replayed_findings_and_keeps_those_without_details(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    now = datetime.now(UTC)
    replayed = _stored(now - timedelta(minutes=2))
    replayed.details = {"ip": "203.0.113.7", "replay": True}  # `opmas replay` without --notify
    bare = _stored(now - timedelta(minutes=3))
    bare.details = None
    _, kept = await _store(engine, [replayed, bare])
    await _seed(engine, notifier_settings, http_receiver)
    async with Notifier(engine, bus, notifier_settings) as notifier:
        assert await notifier.backfill() == 1
    assert [str(row["finding_uuid"]) for row in await _history(engine)] == [kept]
