"""libpq's TLS options in OPMAS_DATABASE_URL reach asyncpg: `sslmode=disable` works, and a
URL demanding TLS (`sslmode=verify-full&sslrootcert=...`) never falls back to plain text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from opmas.db import migrate
from opmas.db.engine import create_engine, plain_dsn


async def _uses_tls(url: str) -> bool:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return bool((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def test_a_url_with_sslmode_disable_works_everywhere(database_url: str) -> None:
    url = f"{database_url}?sslmode=disable"
    assert await _uses_tls(url) is False
    assert await migrate.current_revision(url) == migrate.head_revision()
    conn = await asyncpg.connect(plain_dsn(url))  # the store's own connection
    await conn.close()


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A throwaway CA certificate (PEM)."""
    cert = tmp_path / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", tmp_path / "ca.key", "-out", cert, "-days", "2", "-subj", "/CN=ca"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


@pytest.mark.parametrize(
    "options",
    [
        "sslmode=require",
        "sslmode=verify-full&sslrootcert={ca}",
        "sslmode=verify-ca&sslrootcert={ca}",
    ],
)
async def test_a_url_asking_for_tls_is_refused_by_a_server_without_it(
    database_url: str, ca: Path, options: str
) -> None:
    """The embedded PostgreSQL has no TLS: a URL that demands it must fail, not fall back to
    plain text, through the engine, the migrations and the store's own connection alike."""
    url = f"{database_url}?{options.format(ca=ca)}"
    with pytest.raises(Exception, match="rejected SSL upgrade"):
        await _uses_tls(url)
    with pytest.raises(Exception, match="rejected SSL upgrade"):
        await migrate.current_revision(url)
    with pytest.raises(Exception, match="rejected SSL upgrade"):
        await asyncpg.connect(plain_dsn(url))
