"""Data in notifications is shown, never obeyed: no header injection by email, no mention or
link by Slack, JSON values only by webhook; a channel that raises fails its row, not the loop.
Real peers on loopback (aiosmtpd, the HTTP receiver)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.crypto import SecretBox
from opmas.db.engine import session_factory
from opmas.messages import Finding, new_id
from opmas.models.notify import NotificationChannel
from opmas.notify import catalog
from opmas.notify.channels import deliver
from opmas.notify.render import Message, finding_payload, single
from opmas.notify.service import Notifier
from opmas.settings import NotifierSettings, Settings
from tests.integration.notify.conftest import SMTP_PASSWORD, SMTP_USER
from tests.integration.notify.peers import HttpReceiver, Mailbox

pytestmark = pytest.mark.integration

BOX = SecretBox("hygiene-test-key")
SETTINGS = NotifierSettings(send_timeout_s=5)
HOSTNAME = "r1\r\nBcc: victim@example.org\n<!channel>"
DESCRIPTION = "R&D <!channel> <https://evil.example|click>\r\nX-Injected: yes"


def _finding(hostname: str = HOSTNAME, description: str = DESCRIPTION) -> Finding:
    return Finding(
        finding_id=new_id(),
        agent_name="SecurityAgent",
        finding_ts_utc="2026-11-22T10:00:00.000Z",
        device_hostname=hostname,
        device_ip="198.51.100.1",
        severity="critical",
        finding_type="SshBruteForce",
        rule_name="ssh-brute-force-fast",
        description=description,
        details={},
        evidence_event_ids=[],
        domain="security",
        count=1,
    )


def _message() -> Message:
    return single(finding_payload(_finding()))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def _channel(kind: str, config: dict[str, Any], secret: str | None) -> NotificationChannel:
    return NotificationChannel(
        name=f"hygiene-{kind}",
        channel_type=kind,
        config=config,
        encrypted_secret=BOX.encrypt(secret) if secret else None,
    )


def _email_config(port: int | str, ca_file: Path) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "username": SMTP_USER,
        "from": "opmas@example.net",
        "to": ["ops@example.net"],
        "ca_file": str(ca_file),
    }


async def test_email_subject_from_data_carries_no_header(
    smtp_port: int, tls_files: tuple[Path, Path], mailbox: Mailbox, http: httpx.AsyncClient
) -> None:
    channel = _channel("email", _email_config(smtp_port, tls_files[0]), SMTP_PASSWORD)

    await deliver(channel, _message(), box=BOX, http=http, settings=SETTINGS)

    assert mailbox.envelopes == [("opmas@example.net", ["ops@example.net"], True)]
    (email,) = mailbox.messages
    subject = re.sub(r"\r?\n[ \t]", " ", str(email["Subject"]))  # undo header folding
    assert "\r" not in subject
    assert "\n" not in subject
    assert "r1 Bcc: victim@example.org <!channel>" in subject
    assert email["Bcc"] is None
    assert email["X-Injected"] is None
    assert {"Bcc", "X-Injected"}.isdisjoint(email.keys())
    assert "X-Injected: yes" in email.get_payload()  # the body shows it as text


async def test_slack_shows_mentions_and_links_from_data_as_text(
    http_receiver: HttpReceiver, http: httpx.AsyncClient
) -> None:
    channel = _channel("slack", {}, f"{http_receiver.url}/services/T/B/hygiene")

    await deliver(channel, _message(), box=BOX, http=http, settings=SETTINGS)

    (request,) = http_receiver.on("/services/T/B/hygiene")
    sent = request.json()["text"]
    assert "<" not in sent
    assert ">" not in sent
    assert "&lt;!channel&gt;" in sent
    assert "R&amp;D" in sent
    assert "&lt;https://evil.example|click&gt;" in sent


async def test_webhook_carries_data_as_json_values_only(
    http_receiver: HttpReceiver, http: httpx.AsyncClient
) -> None:
    channel = _channel("webhook", {"url": f"{http_receiver.url}/hook"}, "hmac-key")

    await deliver(channel, _message(), box=BOX, http=http, settings=SETTINGS)

    (request,) = http_receiver.on("/hook")
    body = request.json()
    assert set(body) == {"type", "subject", "text", "severity", "finding"}
    assert body["finding"]["device_hostname"] == HOSTNAME
    assert body["finding"]["description"] == DESCRIPTION
    assert "\n" not in body["subject"]


async def _history(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT h.status, h.attempts, h.error_message, c.name FROM notification_history h"
                " JOIN notification_channels c ON c.id = h.channel_id ORDER BY h.id"
            )
        )
        return [dict(row._mapping) for row in rows]


async def test_a_channel_that_raises_fails_its_row_and_the_next_notification_is_sent(
    engine: AsyncEngine,
    bus: Bus,
    notifier_settings: Settings,
    http_receiver: HttpReceiver,
    tls_files: tuple[Path, Path],
) -> None:
    async with session_factory(engine)() as session:
        # a port that is not a number: int() raises ValueError inside the email protocol code
        broken = _email_config("not-a-port", tls_files[0])
        await catalog.add_channel(session, "broken-mail", "email", broken, None)
        await catalog.add_channel(
            session, "hook", "webhook", {"url": f"{http_receiver.url}/h"}, None
        )
        await catalog.add_rule(
            session,
            "all",
            min_severity="info",
            max_severity="critical",
            domains=[],
            categories=[],
            channels=["broken-mail", "hook"],
            digest_interval_s=0,
        )
        await session.commit()
    async with Notifier(engine, bus, notifier_settings) as notifier:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        try:
            await notifier.queue([_finding()])
            await _until_hooks(http_receiver, 1)
            await notifier.queue([_finding(hostname="r2", description="second")])
            await _until_hooks(http_receiver, 2)
            deadline = time.monotonic() + 15
            while [r["status"] for r in await _history(engine)].count("failed") < 2:
                assert time.monotonic() < deadline, "the broken channel's rows are not failed"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)

    assert not task.cancelled()
    assert task.exception() is None
    rows = await _history(engine)
    mail_rows = [row for row in rows if row["name"] == "broken-mail"]
    assert [row["status"] for row in mail_rows] == ["failed", "failed"]
    assert all(row["attempts"] == 1 for row in mail_rows)  # not retried: a bug stays a bug
    assert all("ValueError" in row["error_message"] for row in mail_rows)
    assert [row["status"] for row in rows if row["name"] == "hook"] == ["sent", "sent"]
    texts = [request.json()["finding"]["description"] for request in http_receiver.on("/h")]
    assert texts == [DESCRIPTION, "second"]


async def _until_hooks(receiver: HttpReceiver, count: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(receiver.on("/h")) < count:
        assert time.monotonic() < deadline, f"fewer than {count} webhook deliveries"
        await asyncio.sleep(0.1)
