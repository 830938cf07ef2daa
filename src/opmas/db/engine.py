"""The async SQLAlchemy engine (asyncpg) and the session factory every component shares."""

from __future__ import annotations

from sqlalchemy.engine import make_url
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


def async_url(url: str) -> str:
    """Return `url` with the asyncpg driver: postgres:// and postgresql:// become
    postgresql+asyncpg://, and libpq's `sslmode` query option becomes asyncpg's `ssl`.

    Raises:
        ConfigError: the URL is not a PostgreSQL URL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError("database URL is not a valid URL") from exc
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise ConfigError(f"database URL must be postgresql://, not {parsed.drivername}://")
    query = dict(parsed.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return parsed.set(drivername=ASYNC_DRIVER, query=query).render_as_string(hide_password=False)


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
        },
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine` whose objects stay readable after commit (expire_on_commit=False)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def plain_dsn(url: str) -> str:
    """The URL as asyncpg itself takes it (`postgresql://`), whatever driver it names."""
    return async_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)
