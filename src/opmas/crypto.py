"""Stored secrets (SSH private keys, SMTP passwords, webhook and Slack secrets) encrypted with
a key derived from `OPMAS_SECRET_KEY`; decrypted only in memory, at the moment of use.

Every encrypted column is listed in `ENCRYPTED_COLUMNS`, so that `opmas keys rotate` re-encrypts
all of them in one transaction.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from opmas.errors import SecretError
from opmas.settings import SECRET_KEY_FILE, Settings, ensure_secret_key

ENCRYPTED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ssh_keys", "encrypted_key"),
    ("notification_channels", "encrypted_secret"),
)
"""(table, column) of every value stored encrypted; each table has an `id` primary key."""

_HKDF_INFO = b"opmas stored secrets v1"


def fernet_key(secret_key: str) -> bytes:
    """The Fernet key (AES-128-CBC + HMAC-SHA256) derived from the secret key with HKDF."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(raw)


class SecretBox:
    """Encrypts and decrypts stored secrets under one secret key."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise SecretError("the secret key is empty")
        self._fernet = Fernet(fernet_key(secret_key))

    def encrypt(self, plain: str | bytes) -> str:
        """The token to store for `plain` (URL-safe text; different on every call)."""
        data = plain.encode() if isinstance(plain, str) else plain
        return self._fernet.encrypt(data).decode("ascii")

    def decrypt_bytes(self, token: str) -> bytes:
        """The secret behind `token`. Raises SecretError if another key encrypted it."""
        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, ValueError) as exc:
            raise SecretError(
                "a stored secret does not decrypt with the secret key (rotated or changed?)"
            ) from exc

    def decrypt(self, token: str) -> str:
        """`decrypt_bytes` as text."""
        return self.decrypt_bytes(token).decode()

    def reencrypt(self, token: str, new: SecretBox) -> str:
        """`token` decrypted with this box and encrypted with `new`."""
        return new.encrypt(self.decrypt_bytes(token))


class SecretKeys:
    """Where a component gets its SecretBox: the configured key, or the data_dir key file.

    A key kept in data_dir (no `OPMAS_SECRET_KEY` in the environment) is read again at each
    `box()`, so a running component follows `opmas keys rotate` without a restart.
    """

    def __init__(self, settings: Settings) -> None:
        self.path = settings.data_dir / SECRET_KEY_FILE
        configured = settings.secret_key.get_secret_value() if settings.secret_key else None
        self.file_based = configured is None or (
            self.path.is_file() and self.path.read_text().strip() == configured
        )
        self._settings = settings

    def box(self) -> SecretBox:
        if self.file_based:
            fresh = ensure_secret_key(self._settings.model_copy(update={"secret_key": None}))
        else:
            fresh = self._settings
        assert fresh.secret_key is not None  # noqa: S101 - ensure_secret_key always sets it
        return SecretBox(fresh.secret_key.get_secret_value())


def secret_box(settings: Settings) -> SecretBox:
    """The box of the secret key in force now (see SecretKeys)."""
    return SecretKeys(settings).box()
