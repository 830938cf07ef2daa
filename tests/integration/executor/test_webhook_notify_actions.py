"""webhook actions against a loopback HTTP receiver, and notify actions queueing rows for the
notifier."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.subjects import ActionState
from opmas.crypto import SecretBox
from opmas.executor.service import Executor
from opmas.models import NotificationChannel, NotificationHistory
from opmas.notify.signing import verify
from tests.integration.executor.conftest import add_action, add_finding, reload
from tests.peers.http import HttpReceiver

pytestmark = pytest.mark.integration

HOOK_SECRET = "hook-secret-4f1c"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver.start(statuses=[503]) as server:
        yield server


async def _channel(
    session: AsyncSession, box: SecretBox, name: str, kind: str, url: str = "", active: bool = True
) -> NotificationChannel:
    row = NotificationChannel(
        name=name,
        channel_type=kind,
        config={"url": url} if url else {},
        encrypted_secret=box.encrypt(HOOK_SECRET) if kind == "webhook" else None,
        is_active=active,
    )
    session.add(row)
    await session.commit()
    return row


async def test_webhook_posts_action_and_finding_signed_and_retries_an_error_status(
    session: AsyncSession, box: SecretBox, receiver: HttpReceiver, executor: Executor
) -> None:
    await _channel(session, box, "soc", "webhook", receiver.url)
    finding = await add_finding(session)
    action = await add_action(
        session,
        "webhook",
        {"channel": "soc"},
        retry_count=1,
        finding_id=finding.id,
        finding_created_at=finding.created_at,
    )

    assert await executor.execute(action.id) is ActionState.SUCCEEDED

    requests = receiver.requests
    assert len(requests) == 2  # 503, then 200
    for request in requests:
        assert verify(HOOK_SECRET.encode(), request.body, request.headers)
        assert not verify(b"another secret", request.body, request.headers)
    body = json.loads(requests[-1].body)
    assert body["action"]["action_id"] == action.id
    assert body["action"]["state"] == "running"
    assert body["finding"]["finding_uuid"] == str(finding.finding_uuid)
    assert body["finding"]["details"] == {"count": 12}
    row = await reload(session, action)
    assert row.attempts == 2
    assert row.result is not None
    assert row.result["status_code"] == 200
    assert [a.get("status_code") for a in row.result["attempts"]] == [503, 200]


async def test_webhook_answering_errors_fails_the_action(
    session: AsyncSession, box: SecretBox, executor: Executor
) -> None:
    with HttpReceiver.start(default_status=500) as failing:
        await _channel(session, box, "down", "webhook", failing.url)
        action = await add_action(session, "webhook", {"channel": "down"}, retry_count=1)

        assert await executor.execute(action.id) is ActionState.FAILED

        assert len(failing.requests) == 2
    row = await reload(session, action)
    assert row.result is not None
    assert row.result["status_code"] == 500
    assert "HTTP 500" in row.result["error"]


async def test_webhook_to_an_unknown_channel_fails_without_retry(
    session: AsyncSession, executor: Executor
) -> None:
    action = await add_action(session, "webhook", {"channel": "nope"}, retry_count=3)

    assert await executor.execute(action.id) is ActionState.FAILED

    row = await reload(session, action)
    assert row.attempts == 0
    assert row.result is not None
    assert "no active webhook channel named 'nope'" in row.result["error"]


async def test_notify_queues_one_pending_row_per_active_channel(
    session: AsyncSession, box: SecretBox, executor: Executor
) -> None:
    ops = await _channel(session, box, "ops-mail", "email")
    chat = await _channel(session, box, "ops-slack", "slack")
    await _channel(session, box, "old", "email", active=False)
    config = {"subject": "r1 rebooted", "text": "r1 was rebooted by playbook X"}
    action = await add_action(session, "notify", config, incident_id=None)

    assert await executor.execute(action.id) is ActionState.SUCCEEDED

    rows = (
        await session.scalars(
            select(NotificationHistory).where(NotificationHistory.action_id == action.id)
        )
    ).all()
    assert sorted((r.channel, r.channel_id, r.status) for r in rows) == [
        ("ops-mail", ops.id, "pending"),
        ("ops-slack", chat.id, "pending"),
    ]
    assert {r.notification_type for r in rows} == {"action"}
    assert rows[0].payload is not None
    assert rows[0].payload["subject"] == "r1 rebooted"
    assert rows[0].payload["text"] == "r1 was rebooted by playbook X"
    assert rows[0].payload["action"]["action_id"] == action.id
    row = await reload(session, action)
    assert row.result is not None
    assert row.result["queued"] == ["ops-mail", "ops-slack"]


async def test_notify_to_named_channels_only_queues_those(
    session: AsyncSession, box: SecretBox, executor: Executor
) -> None:
    await _channel(session, box, "ops-mail", "email")
    await _channel(session, box, "ops-slack", "slack")
    action = await add_action(session, "notify", {"channels": ["ops-slack"], "text": "hi"})

    assert await executor.execute(action.id) is ActionState.SUCCEEDED

    channels = (
        await session.scalars(
            select(NotificationHistory.channel).where(NotificationHistory.action_id == action.id)
        )
    ).all()
    assert channels == ["ops-slack"]


async def test_notify_naming_an_unknown_channel_queues_nothing_and_fails(
    session: AsyncSession, box: SecretBox, executor: Executor
) -> None:
    await _channel(session, box, "ops-mail", "email")
    action = await add_action(session, "notify", {"channels": ["ops-mail", "pager"]})

    assert await executor.execute(action.id) is ActionState.FAILED

    queued = await session.scalars(select(NotificationHistory.id))
    assert queued.all() == []
    row = await reload(session, action)
    assert row.result is not None
    assert "'pager'" in row.result["error"]
