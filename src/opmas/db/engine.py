"""The async SQLAlchemy engine (asyncpg) and the session factory every component shares."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from opmas.errors import ConfigError
from opmas.settings import DatabaseSettings

ASYNC_DRIVER = "postgresql+asyncpg"
_ACCEPTED_DRIVERS = frozenset({"postgres", "postgresql", ASYNC_DRIVER})
# libpq's TLS options: asyncpg reads them from a DSN, not as keyword arguments (tls_args)
_TLS_FILE_OPTIONS = frozenset(
    {"sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslsni"}
    | {"ssl_min_protocol_version", "ssl_max_protocol_version"}
)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError("database URL is not a valid URL") from exc
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise ConfigError(f"database URL must be postgresql://, not {parsed.drivername}://")
    return parsed


def async_url(url: str) -> str:
    """Return `url` with the asyncpg driver: postgres:// and postgresql:// become
    postgresql+asyncpg://, libpq's `sslmode` query option becomes asyncpg's `ssl`, and the
    other TLS options (sslrootcert, sslcert, sslkey...) are left to `tls_args`.

    Raises:
        ConfigError: the URL is not a PostgreSQL URL.
    """
    parsed = _parse(url)
    query = {k: v for k, v in parsed.query.items() if k not in _TLS_FILE_OPTIONS}
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return parsed.set(drivername=ASYNC_DRIVER, query=query).render_as_string(hide_password=False)


def tls_args(url: str) -> dict[str, Any]:
    """asyncpg `connect` arguments for libpq's TLS file options of `url` (such as
    `?sslmode=verify-full&sslrootcert=/etc/opmas/db-ca.pem`): the URL as a DSN, which asyncpg
    parses with libpq's rules; none when the URL has no such option."""
    if _TLS_FILE_OPTIONS.isdisjoint(_parse(url).query):
        return {}
    return {"dsn": plain_dsn(url)}


def create_engine(url: str, settings: DatabaseSettings | None = None) -> AsyncEngine:
    """Open a pooled asyncpg engine on `url`; every connection runs in UTC.

    INET values travel as `str` (not `ipaddress` objects), so they pass unchanged to the API
    and the bus. The engine connects lazily; the caller disposes of it.
    """
    settings = settings or DatabaseSettings()
    return create_async_engine(
        async_url(url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        native_inet_types=False,
        connect_args={
            "timeout": settings.connect_timeout_s,
            "server_settings": {"timezone": "UTC", "application_name": "opmas"},
            **tls_args(url),
        },
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine` whose objects stay readable after commit (expire_on_commit=False)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def plain_dsn(url: str) -> str:
    """The URL as asyncpg itself takes it (`postgresql://`, libpq's query options such as
    `sslmode` kept), whatever driver it names."""
    parsed = _parse(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
