"""Alembic environment: runs the migrations over asyncpg on a loop of its own.

The URL comes from `config.attributes["url"]` (set by `opmas.db.migrate`) or the
`sqlalchemy.url` option; migrations are static SQL and import no models.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from opmas.db.engine import async_url, tls_args

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set config.attributes['url'] or sqlalchemy.url")
    return async_url(str(url))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    raw = str(config.attributes.get("url") or config.get_main_option("sqlalchemy.url"))
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=tls_args(raw))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online(_url()))
