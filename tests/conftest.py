"""Session-wide real servers: one PostgreSQL and one nats-server, started the way `opmas up`
starts them, or the ones named by OPMAS_TEST_DATABASE_URL / OPMAS_TEST_NATS_URL.

Each test gets its own database (copied from a template migrated once to head) and its own
bus namespace, so no state leaks from one test to the next.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats.js.errors
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus, connect_bus
from opmas.bus.streams import delete_streams, ensure_streams
from opmas.embedded import EmbeddedNats, EmbeddedPostgres
from opmas.ingest.idempotency import bucket_name
from opmas.pipeline.leases import lease_bucket
from opmas.settings import BusSettings, EmbeddedSettings, Settings


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
async def pg_admin_url() -> AsyncIterator[str]:
    """URL of a PostgreSQL server's `postgres` database: embedded, or OPMAS_TEST_DATABASE_URL."""
    external = os.environ.get("OPMAS_TEST_DATABASE_URL")
    if external:
        yield _with_database(external, "postgres")
        return
    # The superuser's URL: the tests create a database each (the app's role may not).
    data = Path(tempfile.mkdtemp(prefix="opmas-test-pg-"))
    server = EmbeddedPostgres(data, EmbeddedSettings(), durable=False)
    try:
        await server.start()
        try:
            yield server.admin_url
        finally:
            await server.stop()
    finally:
        server.remove()  # run as root, the cluster lives outside `data`
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """URL of a nats-server with JetStream: embedded, or OPMAS_TEST_NATS_URL."""
    external = os.environ.get("OPMAS_TEST_NATS_URL")
    if external:
        yield external
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), EmbeddedSettings(), sync=False)
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def _create_database(admin_url: str, name: str, template: str | None = None) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def template_database(pg_admin_url: str) -> AsyncIterator[str]:
    """Name of a database migrated once to head, copied for each test."""
    from opmas.db import migrate

    name = f"opmas_tpl_{uuid.uuid4().hex[:10]}"
    url = await _create_database(pg_admin_url, name)
    await migrate.upgrade(url)
    try:
        yield name
    finally:
        await _drop_database(pg_admin_url, name)


@pytest.fixture
async def empty_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A new empty database of its own, dropped after the test."""
    name = f"opmas_t_{uuid.uuid4().hex[:12]}"
    url = await _create_database(pg_admin_url, name)
    try:
        yield url
    finally:
        await _drop_database(pg_admin_url, name)


@pytest.fixture
async def database_url(pg_admin_url: str, template_database: str) -> AsyncIterator[str]:
    """A new database of its own, already at the head migration."""
    name = f"opmas_t_{uuid.uuid4().hex[:12]}"
    url = await _create_database(pg_admin_url, name, template=template_database)
    try:
        yield url
    finally:
        await _drop_database(pg_admin_url, name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    from opmas.db.engine import create_engine

    eng = create_engine(database_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def bus_settings() -> BusSettings:
    """Bus settings with a namespace of the test's own, and quick retries."""
    return BusSettings(
        namespace=f"t{uuid.uuid4().hex[:12]}",
        max_deliver=3,
        ack_wait_s=2.0,
        nak_delay_s=0.05,
        publish_timeout_s=5.0,
    )


@pytest.fixture
async def bus(nats_url: str, bus_settings: BusSettings) -> AsyncIterator[Bus]:
    """A Bus with every OPMAS stream created in the test's namespace; removed afterwards."""
    async with connect_bus(nats_url, bus_settings, name="opmas-test") as connected:
        await ensure_streams(connected)
        try:
            yield connected
        finally:
            await delete_streams(connected)
            for bucket in (bucket_name(connected.subjects), lease_bucket(connected.subjects)):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await connected.js.delete_key_value(bucket)


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, nats_url: str, bus_settings: BusSettings
) -> Settings:
    """Full settings pointing at this test's database and bus namespace."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=SecretStr(database_url),
        nats_url=nats_url,
        secret_key=SecretStr("test-secret-key-0123456789abcdef"),
        bus=bus_settings,
        http_port=0,
    )
