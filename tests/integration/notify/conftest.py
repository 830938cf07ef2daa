"""Fixtures for the notifier: loopback peers, notifier settings with short intervals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas.settings import NotifierSettings, Settings
from tests.integration.notify.peers import HttpReceiver, Mailbox, self_signed_cert, smtp_server

SMTP_USER = "opmas"
SMTP_PASSWORD = "smtp-pass-Zq81"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed_cert(tmp_path)


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox(username=SMTP_USER, password=SMTP_PASSWORD)


@pytest.fixture
def smtp_port(tls_files: tuple[Path, Path], mailbox: Mailbox) -> Iterator[int]:
    """Port of an SMTP server requiring STARTTLS and AUTH, delivering into `mailbox`."""
    with smtp_server(*tls_files, mailbox) as port:
        yield port


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver.start() as receiver:
        yield receiver


@pytest.fixture
def notifier_settings(settings: Settings) -> Settings:
    """`settings` with a quick notifier: 3 s digests, 0.1 s polls, quick retries."""
    quick = NotifierSettings(
        digest_interval_s=3.0, poll_s=0.1, max_attempts=3, retry_backoff_s=0.2, send_timeout_s=5
    )
    return settings.model_copy(update={"notifier": quick})
