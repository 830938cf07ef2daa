"""Ingest tokens (table `api_tokens`): create, list, revoke, authenticate.

A token is `opm_` and 43 random URL-safe characters, shown once; only its sha256 is stored,
with its first 12 characters as `prefix` to tell tokens apart. Functions here only flush;
the caller (CLI command, API request) commits.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.errors import Conflict, NotFound
from opmas.models.auth import ApiToken
from opmas.models.core import Device

TOKEN_PREFIX = "opm_"  # noqa: S105 - the public prefix, not a secret
SHOWN_PREFIX_CHARS = 12
INGEST_SCOPE = "ingest"


def generate_token() -> str:
    """A new random token text."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored: the sha256 hex of the token text."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """A token as `opmas tokens list` shows it (never the secret)."""

    id: int
    name: str
    prefix: str
    device: str | None
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Authenticated:
    """The holder of a valid token."""

    token_id: int
    name: str
    device: str | None
    scopes: list[str]
    last_used_at: datetime | None

    def may_ingest(self) -> bool:
        return not self.scopes or INGEST_SCOPE in self.scopes


async def create_token(
    session: AsyncSession,
    name: str,
    *,
    device: str | None = None,
    expires_days: int | None = None,
    scopes: tuple[str, ...] = (INGEST_SCOPE,),
) -> tuple[str, TokenInfo]:
    """Store a new token; return its text (to show once) and its row.

    Raises Conflict when the name is taken, NotFound when no device has hostname `device`.
    """
    device_id = None
    if device is not None:
        device_id = await session.scalar(select(Device.id).where(Device.hostname == device))
        if device_id is None:
            raise NotFound(f"no device with hostname {device!r}")
    token = generate_token()
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    row = ApiToken(
        name=name,
        token_hash=hash_token(token),
        prefix=token[:SHOWN_PREFIX_CHARS],
        device_id=device_id,
        scopes=list(scopes),
        expires_at=expires,
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a token named {name!r} exists already") from exc
    return token, _info(row, device)


async def list_tokens(session: AsyncSession) -> list[TokenInfo]:
    """Every token, oldest first."""
    rows = await session.execute(
        select(ApiToken, Device.hostname)
        .outerjoin(Device, Device.id == ApiToken.device_id)
        .order_by(ApiToken.id)
    )
    return [_info(token, hostname) for token, hostname in rows]


async def revoke_token(session: AsyncSession, name_or_id: str) -> TokenInfo:
    """Revoke the token with that name (or id); NotFound when there is none."""
    query = select(ApiToken, Device.hostname).outerjoin(Device, Device.id == ApiToken.device_id)
    if name_or_id.isdigit():
        query = query.where((ApiToken.name == name_or_id) | (ApiToken.id == int(name_or_id)))
    else:
        query = query.where(ApiToken.name == name_or_id)
    found = (await session.execute(query)).first()
    if found is None:
        raise NotFound(f"no token named {name_or_id!r}")
    token, hostname = found
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        await session.flush()
    return _info(token, hostname)


async def authenticate(session: AsyncSession, token: str) -> Authenticated | None:
    """The holder of `token` when it exists, is not revoked and has not expired; else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = datetime.now(UTC)
    query = (
        select(ApiToken, Device.hostname)
        .outerjoin(Device, Device.id == ApiToken.device_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        .where((ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now))
    )
    found = (await session.execute(query)).first()
    if found is None:
        return None
    row, hostname = found
    return Authenticated(row.id, row.name, hostname, list(row.scopes), row.last_used_at)


async def touch(session: AsyncSession, token_id: int) -> None:
    """Set `last_used_at` of a token to now."""
    await session.execute(
        update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=datetime.now(UTC))
    )


def _info(token: ApiToken, device: str | None) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        device=device,
        scopes=list(token.scopes),
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )
