"""Schema migrations: Alembic driven from code, with no alembic.ini, on the packaged scripts.

Alembic's commands are synchronous and its env.py runs asyncpg on a loop of its own, so each
command runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from opmas.db.engine import async_url, tls_args
from opmas.errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config on the packaged migrations; `url` goes to env.py uninterpolated."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of OPMAS."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError("no migrations found in " + str(MIGRATIONS_DIR))
    return head


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    await _run(command.upgrade, url, revision)


async def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ("base" removes every OPMAS object)."""
    await _run(command.downgrade, url, revision)


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at; None when it was never migrated."""
    engine = create_async_engine(
        async_url(url), poolclass=pool.NullPool, connect_args=tls_args(url)
    )
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


async def migrate_to(url: str, revision: str) -> None:
    """Move the database at `url` to `revision`, upgrading or downgrading as needed.

    Raises:
        StoreError: `revision` is unknown.
    """
    target = _resolve(revision)
    current = await current_revision(url)
    if target == current:
        return
    if target is not None and (current is None or target not in _ancestors(current)):
        await upgrade(url, target)
    else:
        await downgrade(url, target or "base")


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _resolve(revision: str) -> str | None:
    """The full id of `revision` (a prefix, "head" or "base"); None for base."""
    if revision == "base":
        return None
    script = ScriptDirectory.from_config(alembic_config())
    try:
        found = script.get_revision(revision)
    except CommandError as exc:
        raise StoreError(f"unknown revision {revision!r}") from exc
    if found is None:
        raise StoreError(f"unknown revision {revision!r}")
    return found.revision


def _ancestors(revision: str) -> set[str]:
    """`revision` and every revision below it."""
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.iterate_revisions(revision, "base")}


async def _run(step: Callable[[Config, str], None], url: str, revision: str) -> None:
    config = alembic_config(url)
    try:
        await asyncio.to_thread(step, config, revision)
    except (CommandError, SQLAlchemyError) as exc:
        raise StoreError(f"migration to {revision!r} failed: {exc}") from exc
