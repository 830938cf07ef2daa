"""Embedded servers refuse clients without credentials; OPMAS connects to PostgreSQL as a role
that owns its database and is no superuser; data dirs made before are upgraded on start."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import pytest

from opmas.db import migrate
from opmas.embedded import PG_APP_ROLE, PG_ROOT_HOME, EmbeddedNats, EmbeddedPostgres
from opmas.settings import EmbeddedSettings


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _answer_without_credentials(port: int, user: str = "", password: str = "") -> str:
    """What the server answers a client that connects (over plain NATS protocol, so no client
    library's retries hide it) with no or the given credentials."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO
        login = f',"user":"{user}","pass":"{password}"' if user else ""
        writer.write(f'CONNECT {{"verbose":false{login}}}\r\nPING\r\n'.encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_embedded_nats_refuses_a_client_without_credentials(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, EmbeddedSettings(), sync=False)
    url = await server.start()
    try:
        password = (tmp_path / "nats.password").read_text().strip()
        refused = "-ERR 'Authorization Violation'"
        assert await _answer_without_credentials(server.port) == refused
        assert await _answer_without_credentials(server.port, "opmas", "wrong") == refused
        assert await _answer_without_credentials(server.port, "opmas", password) == "PONG"
        nc = await nats.connect(url)
        try:
            assert (await nc.jetstream().account_info()).streams == 0
        finally:
            await nc.close()
    finally:
        await server.stop()
    assert f"opmas:{password}@" in url
    assert len(password) >= 24
    assert _mode(tmp_path / "nats.password") == 0o600
    assert _mode(tmp_path / "nats" / "nats-server.conf") == 0o600


async def test_a_nats_data_dir_without_credentials_gets_them_and_keeps_its_streams(
    tmp_path: Path,
) -> None:
    first = EmbeddedNats(tmp_path, EmbeddedSettings(), sync=True)
    nc = await nats.connect(await first.start())
    await nc.jetstream().add_stream(name="KEEP", subjects=["keep.>"])
    await nc.jetstream().publish("keep.one", b"persisted")
    await nc.close()
    await first.stop()
    old = (tmp_path / "nats.password").read_text()
    (tmp_path / "nats.password").unlink()  # as a data dir of an OPMAS before credentials

    second = EmbeddedNats(tmp_path, EmbeddedSettings(), sync=True)
    url = await second.start()
    try:
        assert (tmp_path / "nats.password").read_text() != old
        assert "Authorization Violation" in await _answer_without_credentials(second.port)
        nc = await nats.connect(url)
        assert (await nc.jetstream().get_msg("KEEP", 1)).data == b"persisted"
        await nc.close()
    finally:
        await second.stop()


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """An embedded PostgreSQL not started yet; stopped and removed after the test."""
    server = EmbeddedPostgres(tmp_path / "data", EmbeddedSettings(), durable=False)
    try:
        yield server
    finally:
        await server.stop()
        server.remove()


async def test_the_app_connects_as_a_role_that_owns_its_database_and_is_no_superuser(
    postgres: EmbeddedPostgres,
) -> None:
    url = await postgres.start()
    (role,) = await _fetch(
        url,
        "SELECT current_user AS name, rolsuper, rolcreatedb, rolcreaterole, rolreplication"
        " FROM pg_roles WHERE rolname = current_user",
    )
    assert role["name"] == PG_APP_ROLE
    assert not role["rolsuper"]
    assert not role["rolcreatedb"]
    assert not role["rolcreaterole"]
    assert not role["rolreplication"]
    (owner,) = await _fetch(
        url, "SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = 'opmas'"
    )
    assert owner["o"] == PG_APP_ROLE

    await migrate.upgrade(url)  # the role runs the migrations: it owns the schema
    assert await migrate.current_revision(url) == migrate.head_revision()
    await migrate.migrate_to(url, "base")
    await migrate.upgrade(url)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _fetch(url, "CREATE ROLE intruder SUPERUSER")
    for name in ("postgres-opmas.password", "postgres.password"):
        assert _mode(postgres.root / name) == 0o600


async def test_a_database_the_superuser_made_is_handed_over_to_the_role_on_start(
    postgres: EmbeddedPostgres,
) -> None:
    await postgres.start()
    # the data dir of an OPMAS before the role: database, tables, partitions, sequences and
    # functions all owned by the bootstrap superuser
    admin = postgres.admin_url
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute("DROP DATABASE opmas WITH (FORCE)")
        await conn.execute(f"DROP ROLE {PG_APP_ROLE}")
        await conn.execute("CREATE DATABASE opmas")
    finally:
        await conn.close()
    old_url = admin.rsplit("/", 1)[0] + "/opmas"
    await migrate.upgrade(old_url)
    await _fetch(old_url, "CREATE VIEW legacy_view AS SELECT 1 AS one")
    await _fetch(old_url, "CREATE TABLE legacy_serial (id serial PRIMARY KEY)")
    postgres.app_password_file.unlink()
    await postgres.stop()

    url = await postgres.start()
    not_owned = await _fetch(
        postgres.admin_url.rsplit("/", 1)[0] + "/opmas",  # the port changed
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        " AND pg_get_userbyid(c.relowner) <> 'opmas'"
        " UNION ALL SELECT p.proname, 'f' FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        " AND pg_get_userbyid(p.proowner) <> 'opmas'"
        " UNION ALL SELECT nspname, 'n' FROM pg_namespace WHERE nspname = 'public'"
        " AND pg_get_userbyid(nspowner) <> 'opmas'"
        " UNION ALL SELECT datname, 'd' FROM pg_database WHERE datname = 'opmas'"
        " AND pg_get_userbyid(datdba) <> 'opmas'",
    )
    assert not_owned == []
    partitions = await _fetch(
        url, "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'events'::regclass"
    )
    assert partitions[0]["n"] > 0  # partitions were among what changed owner
    await _fetch(url, "INSERT INTO legacy_serial DEFAULT VALUES")
    await migrate.migrate_to(url, "base")  # the role may now drop everything: it owns it
    await migrate.upgrade(url)
    await postgres.stop()
    again = await postgres.start()  # idempotent
    assert await migrate.current_revision(again) == migrate.head_revision()


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL changes user only under root")
async def test_as_root_no_parent_directory_of_the_data_dir_is_opened(tmp_path: Path) -> None:
    closed = tmp_path / "root-home"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    data = closed / "opmas-data"
    before = {p: _mode(p) for p in (tmp_path, closed)}
    server = EmbeddedPostgres(data, EmbeddedSettings(), durable=True)
    try:
        url = await server.start()
        assert (await _fetch(url, "SELECT 1 AS one"))[0]["one"] == 1
        assert {p: _mode(p) for p in before} == before
        cluster = Path((data / "postgres.location").read_text().strip())
        assert cluster == server.pgdata
        assert cluster.is_relative_to(PG_ROOT_HOME)
        assert not (data / "postgres").exists()
        owner = pwd.getpwuid(os.stat(cluster).st_uid).pw_name
        assert owner == server.user
        assert _mode(cluster) == 0o700
        assert _mode(cluster.parent) == 0o700
        await server.stop()
        again = EmbeddedPostgres(data, EmbeddedSettings(), durable=True)
        assert again.pgdata == cluster  # found again through the record
    finally:
        await server.stop()
        server.remove()
    assert not cluster.parent.exists()
