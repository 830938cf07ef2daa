"""Readiness of a process: PostgreSQL answers, NATS answers, the schema is at head."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.db import migrate

CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Readiness:
    database: bool
    nats: bool
    schema_revision: str | None
    schema_head: str
    errors: dict[str, str]

    @property
    def schema_current(self) -> bool:
        return self.schema_revision == self.schema_head

    @property
    def ready(self) -> bool:
        return self.database and self.nats and self.schema_current

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "schema_current": self.schema_current, "ready": self.ready}


async def _schema_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision: str | None = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        return revision


async def check_readiness(engine: AsyncEngine, bus: Bus | None, nats_error: str = "") -> Readiness:
    """Ask PostgreSQL and NATS, each within a short timeout; never raises. Without a bus
    (it could not be reached), NATS is down for `nats_error` and the database is still asked."""
    errors: dict[str, str] = {}
    revision: str | None = None
    database = nats = False
    try:
        revision = await asyncio.wait_for(_schema_revision(engine), CHECK_TIMEOUT_S)
        database = True
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        errors["database"] = f"{type(exc).__name__}: {exc}"
    if bus is None:
        errors["nats"] = nats_error or "not connected"
    else:
        try:
            await asyncio.wait_for(bus.ping(), CHECK_TIMEOUT_S)
            nats = True
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            errors["nats"] = f"{type(exc).__name__}: {exc}"
    return Readiness(database, nats, revision, migrate.head_revision(), errors)
