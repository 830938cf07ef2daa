"""Real peers on loopback for the notifier's tests: an SMTP server (aiosmtpd, STARTTLS and
AUTH); the HTTP receiver is `tests.peers.http.HttpReceiver`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.peers.http import HttpReceiver
from tests.peers.ports import free_port

__all__ = ["HttpReceiver", "Mailbox", "free_port", "self_signed_cert", "smtp_server"]


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Mailbox:
    """What the SMTP server received, and the login it accepts."""

    username: str
    password: str
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bool]] = field(default_factory=list)  # from, to, tls
    logins: list[tuple[str, bool]] = field(default_factory=list)  # username, accepted

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        ok = data.login.decode() == self.username and data.password.decode() == self.password
        self.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append(message_from_bytes(content))
        tls = session.ssl is not None
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos), tls))
        return "250 Message accepted"


@contextmanager
def smtp_server(cert: Path, key: Path, mailbox: Mailbox) -> Iterator[int]:
    """An SMTP server on 127.0.0.1 that requires STARTTLS and AUTH; yields its port."""
    import ssl

    # aiosmtpd logs each connection at INFO from its own thread, also after pytest closed
    # the captured stream of the test ("--- Logging error ---")
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=mailbox.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
