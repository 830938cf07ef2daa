"""Email channel: one message over SMTP, STARTTLS by default, with login when configured.

Config: host, port (587), username, from, to [list], starttls (true), validate_certs (true),
ca_file; the password is the channel's encrypted secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from opmas.notify.errors import DeliveryError
from opmas.notify.render import Message, one_line

DEFAULT_PORT = 587


def build_email(config: Mapping[str, Any], message: Message) -> EmailMessage:
    """The RFC 5322 message: From, To, Subject and the plain text. The subject never carries
    a control character from data. Raises DeliveryError when the config lacks `from` or `to`,
    or when the email library refuses a header."""
    sender, recipients = config.get("from"), list(config.get("to") or [])
    if not sender or not recipients:
        raise DeliveryError("email channel needs `from` and at least one `to`")
    email = EmailMessage()
    try:
        email["From"] = one_line(str(sender), 998)
        email["To"] = one_line(", ".join(str(r) for r in recipients), 998)
        email["Subject"] = one_line(message.subject)
        email.set_content(message.text)
    except (ValueError, TypeError, IndexError) as exc:  # email.errors.* are ValueErrors too
        raise DeliveryError(f"email refused by the email library: {exc}") from exc
    return email


async def send_email(
    config: Mapping[str, Any], password: str | None, message: Message, *, timeout_s: float
) -> None:
    """Send `message` to the configured recipients. Raises DeliveryError."""
    host = config.get("host")
    if not host:
        raise DeliveryError("email channel has no SMTP host")
    port = int(config.get("port") or DEFAULT_PORT)
    username = config.get("username") or None
    try:
        await aiosmtplib.send(
            build_email(config, message),
            hostname=str(host),
            port=port,
            username=username,
            password=password if username else None,
            start_tls=bool(config.get("starttls", True)),
            validate_certs=bool(config.get("validate_certs", True)),
            cert_bundle=config.get("ca_file") or None,
            timeout=timeout_s,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(f"SMTP {host}:{port}: {type(exc).__name__}: {exc}") from exc
