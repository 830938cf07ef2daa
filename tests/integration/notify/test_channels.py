"""Each channel protocol against a real peer on loopback: SMTP with STARTTLS and AUTH,
a Slack-style incoming webhook, a signed generic webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opmas.crypto import SecretBox
from opmas.logs import configure_logging
from opmas.models.notify import NotificationChannel
from opmas.notify.channels import DeliveryError, deliver
from opmas.notify.render import Message
from opmas.notify.signing import verify
from opmas.settings import NotifierSettings
from tests.integration.notify.conftest import SMTP_PASSWORD, SMTP_USER
from tests.integration.notify.peers import HttpReceiver, Mailbox

BOX = SecretBox("channel-test-key")
SETTINGS = NotifierSettings(send_timeout_s=5)
MESSAGE = Message(subject="[OPMAS] critical: ssh brute force", text="10 failures", body={"a": 1})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def _channel(kind: str, config: dict[str, Any], secret: str | None) -> NotificationChannel:
    return NotificationChannel(
        name=f"test-{kind}",
        channel_type=kind,
        config=config,
        encrypted_secret=BOX.encrypt(secret) if secret else None,
    )


def _email(port: int, ca_file: Path, password: str = SMTP_PASSWORD) -> NotificationChannel:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "username": SMTP_USER,
        "from": "opmas@example.net",
        "to": ["ops@example.net", "oncall@example.net"],
        "ca_file": str(ca_file),
    }
    return _channel("email", config, password)


async def test_email_goes_over_starttls_with_login_to_every_recipient(
    smtp_port: int, tls_files: tuple[Path, Path], mailbox: Mailbox, http: httpx.AsyncClient
) -> None:
    await deliver(_email(smtp_port, tls_files[0]), MESSAGE, box=BOX, http=http, settings=SETTINGS)

    assert mailbox.logins == [(SMTP_USER, True)]
    assert mailbox.envelopes == [
        ("opmas@example.net", ["ops@example.net", "oncall@example.net"], True)
    ]
    (email,) = mailbox.messages
    assert email["Subject"] == MESSAGE.subject
    assert "10 failures" in email.get_payload()


async def test_email_with_a_wrong_password_fails_without_showing_it(
    smtp_port: int, tls_files: tuple[Path, Path], mailbox: Mailbox, http: httpx.AsyncClient
) -> None:
    channel = _email(smtp_port, tls_files[0], password="wrong-pass-77")
    with pytest.raises(DeliveryError) as caught:
        await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)

    assert "wrong-pass-77" not in str(caught.value)
    assert mailbox.messages == []


async def test_email_refuses_a_certificate_it_cannot_verify(
    smtp_port: int, mailbox: Mailbox, http: httpx.AsyncClient
) -> None:
    channel = _email(smtp_port, Path("/nonexistent"))
    channel.config = {**channel.config, "ca_file": None}
    with pytest.raises(DeliveryError, match="SMTP"):
        await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)
    assert mailbox.logins == []


async def test_slack_gets_the_text_at_its_secret_url(
    http_receiver: HttpReceiver, http: httpx.AsyncClient
) -> None:
    channel = _channel("slack", {}, f"{http_receiver.url}/services/T0/B0/s3cr3t")

    await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)

    (request,) = http_receiver.on("/services/T0/B0/s3cr3t")
    assert request.json() == {"text": f"*{MESSAGE.subject}*\n{MESSAGE.text}"}


async def test_the_secret_slack_url_never_reaches_the_logs(
    http_receiver: HttpReceiver, http: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug")
    channel = _channel("slack", {}, f"{http_receiver.url}/services/T0/B0/l0gged")

    await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)

    assert http_receiver.on("/services/T0/B0/l0gged")
    captured = capsys.readouterr()
    assert "l0gged" not in captured.out + captured.err


async def test_slack_failure_names_the_status_but_not_the_url(
    http_receiver: HttpReceiver, http: httpx.AsyncClient
) -> None:
    http_receiver.default_status = 500
    channel = _channel("slack", {}, f"{http_receiver.url}/services/s3cr3t")
    with pytest.raises(DeliveryError, match="500") as caught:
        await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)
    assert "s3cr3t" not in str(caught.value)


async def test_webhook_body_carries_a_signature_the_receiver_verifies(
    http_receiver: HttpReceiver, http: httpx.AsyncClient
) -> None:
    channel = _channel("webhook", {"url": f"{http_receiver.url}/hook"}, "hmac-key-1")

    await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)

    (request,) = http_receiver.on("/hook")
    assert request.json() == {"a": 1}
    assert verify(b"hmac-key-1", request.body, request.headers)
    assert not verify(b"another-key", request.body, request.headers)


async def test_webhook_that_cannot_be_reached_raises_delivery_error(
    http: httpx.AsyncClient,
) -> None:
    from tests.integration.notify.peers import free_port

    channel = _channel("webhook", {"url": f"http://127.0.0.1:{free_port()}/hook"}, "k")
    with pytest.raises(DeliveryError, match="ConnectError"):
        await deliver(channel, MESSAGE, box=BOX, http=http, settings=SETTINGS)
