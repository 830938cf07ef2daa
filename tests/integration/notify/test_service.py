"""The notifier component on a real PostgreSQL and NATS, sending to loopback receivers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.bus.publish import Publisher
from opmas.crypto import SecretKeys
from opmas.db.engine import session_factory
from opmas.messages import Finding, encode, new_id
from opmas.models.actions import IntendedAction
from opmas.models.notify import NotificationHistory
from opmas.notify import catalog
from opmas.notify.service import Notifier
from opmas.settings import Settings
from tests.integration.notify.peers import HttpReceiver

SLACK_PATH = "/services/T000/B000/slack-url-secret-9f"
WEBHOOK_SECRET = "webhook-hmac-secret-42"


def _finding(
    severity: str = "critical", *, finding_id: str | None = None, count: int = 1
) -> Finding:
    return Finding(
        finding_id=finding_id or new_id(),
        agent_name="SecurityAgent",
        finding_ts_utc="2026-11-22T10:00:00.000Z",
        device_hostname="router-1",
        device_ip="192.168.1.1",
        severity=severity,
        finding_type="SshBruteForce",
        rule_name="ssh-brute-force-fast",
        description="10 failed SSH logins",
        details={"key": "192.168.1.5"},
        evidence_event_ids=[],
        domain="security",
        count=count,
    )


async def _seed(
    engine: AsyncEngine, settings: Settings, receiver: HttpReceiver, *, slack: bool = False
) -> None:
    """A webhook channel (and a Slack one) and a rule sending warning+ findings to them."""
    box = SecretKeys(settings).box()
    async with session_factory(engine)() as session:
        url = f"{receiver.url}/hook"
        await catalog.add_channel(
            session, "hook", "webhook", {"url": url}, box.encrypt(WEBHOOK_SECRET)
        )
        names = ["hook"]
        if slack:
            slack_url = box.encrypt(f"{receiver.url}{SLACK_PATH}")
            await catalog.add_channel(session, "chat", "slack", {}, slack_url)
            names.append("chat")
        await catalog.add_rule(
            session,
            "warnings-up",
            min_severity="warning",
            max_severity="critical",
            domains=["security"],
            categories=[],
            channels=names,
            digest_interval_s=0,
        )
        await session.commit()


async def _history(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM notification_history ORDER BY id"))
        return [dict(row._mapping) for row in result]


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def _running(engine: AsyncEngine, bus: Bus, settings: Settings) -> AsyncIterator[Notifier]:
    async with Notifier(engine, bus, settings) as notifier:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        try:
            yield notifier
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)


def _items(request_body: dict[str, Any]) -> list[dict[str, Any]]:
    if request_body["type"] == "digest":
        items: list[dict[str, Any]] = request_body["items"]
        assert request_body["count"] == len(items)
        return items
    return [request_body]


async def test_a_storm_of_1000_findings_gives_one_message_per_channel_per_interval(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver, slack=True)
    findings = [_finding(("warning", "error", "critical")[i % 3]) for i in range(1000)]
    async with _running(engine, bus, notifier_settings):
        publisher = Publisher(bus)
        for finding in findings:
            await publisher.publish(bus.subjects.findings("security"), encode(finding))
        await publisher.flush()

        async def all_sent() -> bool:
            rows = await _history(engine)
            return len(rows) == 2000 and all(r["status"] == "sent" for r in rows)

        await _until(all_sent, timeout_s=30)

    interval = notifier_settings.notifier.digest_interval_s
    for path in ("/hook", SLACK_PATH):
        times = [r.at for r in http_receiver.on(path)]
        assert 2 <= len(times) <= 10
        assert all(b - a >= interval - 0.05 for a, b in itertools.pairwise(times))
    hooks = [r.json() for r in http_receiver.on("/hook")]
    covered = [item["finding"]["finding_id"] for body in hooks for item in _items(body)]
    assert sorted(covered) == sorted(f.finding_id for f in findings)
    rows = await _history(engine)
    for channel in ("hook", "chat"):
        digests = {r["digest_id"] for r in rows if r["channel"] == channel}
        assert len(digests) == len(http_receiver.on("/hook" if channel == "hook" else SLACK_PATH))
    assert any(
        "findings (" in body.get("text", "")
        for body in (r.json() for r in http_receiver.on(SLACK_PATH))
    )


async def test_burst_updates_and_redeliveries_queue_a_finding_once_per_channel(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver, slack=True)
    first = _finding()
    grown = _finding(finding_id=first.finding_id, count=40)
    async with Notifier(engine, bus, notifier_settings) as notifier:
        assert await notifier.queue([first, grown]) == 2
        assert await notifier.queue([grown]) == 0
    rows = await _history(engine)
    assert [(r["channel"], r["payload"]["finding"]["count"]) for r in rows] == [
        ("hook", 1),
        ("chat", 1),
    ]


async def test_findings_outside_the_rules_are_not_queued(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver)
    other_domain = _finding()
    other_domain.domain = "wifi"
    async with Notifier(engine, bus, notifier_settings) as notifier:
        assert await notifier.queue([_finding("info"), other_domain]) == 0
    assert await _history(engine) == []


async def _send_until(notifier: Notifier, engine: AsyncEngine, status: str) -> dict[str, Any]:
    async def settled() -> bool:
        await notifier.send_due()
        rows = await _history(engine)
        return bool(rows) and rows[0]["status"] == status

    await _until(settled, timeout_s=15)
    return (await _history(engine))[0]


async def test_a_delivery_that_fails_once_is_retried_and_sent_on_the_second_attempt(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver)
    http_receiver.statuses = [503]
    async with Notifier(engine, bus, notifier_settings) as notifier:
        await notifier.queue([_finding()])
        row = await _send_until(notifier, engine, "sent")
    assert row["attempts"] == 2
    assert "503" in row["error_message"]
    assert len(http_receiver.on("/hook")) == 2


async def test_a_delivery_that_always_fails_is_failed_after_max_attempts(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver)
    http_receiver.default_status = 500
    async with Notifier(engine, bus, notifier_settings) as notifier:
        await notifier.queue([_finding()])
        row = await _send_until(notifier, engine, "failed")
        await asyncio.sleep(0.5)
        await notifier.send_due()
    assert row["attempts"] == notifier_settings.notifier.max_attempts
    assert "500" in row["error_message"]
    assert len(http_receiver.on("/hook")) == notifier_settings.notifier.max_attempts


async def test_a_notify_action_queued_by_the_executor_is_delivered(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver)
    async with session_factory(engine)() as session:
        channel = await catalog.get_channel(session, "hook")
        action = IntendedAction(action_type="notify", action_config={"channel": "hook"})
        session.add(action)
        await session.flush()
        payload = {
            "subject": "[OPMAS] action done",
            "text": "blocked 192.168.1.5",
            "action": {"id": action.id},
        }
        session.add(
            NotificationHistory(
                channel_id=channel.id,
                channel="hook",
                notification_type="action",
                status="pending",
                action_id=action.id,
                payload=payload,
            )
        )
        await session.commit()
    async with _running(engine, bus, notifier_settings):
        await _until(lambda: _first_status_is(engine, "sent"))
    (request,) = http_receiver.on("/hook")
    assert request.json() == {"type": "action", **payload}


async def _first_status_is(engine: AsyncEngine, status: str) -> bool:
    rows = await _history(engine)
    return bool(rows) and rows[0]["status"] == status


async def test_channel_secrets_are_stored_only_encrypted(
    engine: AsyncEngine, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver, slack=True)
    async with engine.connect() as conn:
        stored = (
            (await conn.execute(text("SELECT row_to_json(c)::text FROM notification_channels c")))
            .scalars()
            .all()
        )
    assert len(stored) == 2
    assert all(WEBHOOK_SECRET not in row and "slack-url-secret" not in row for row in stored)


async def test_a_finding_whose_id_is_not_a_uuid_is_refused_as_a_bad_payload(
    engine: AsyncEngine, bus: Bus, notifier_settings: Settings, http_receiver: HttpReceiver
) -> None:
    await _seed(engine, notifier_settings, http_receiver)
    async with Notifier(engine, bus, notifier_settings) as notifier:
        with pytest.raises(ValueError, match="UUID"):
            await notifier.queue([_finding(finding_id="not-a-uuid")])
    assert await _history(engine) == []
