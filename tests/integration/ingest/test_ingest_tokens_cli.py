"""`opmas tokens create | list | revoke` against a real database; only the hash is stored."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from typer.testing import CliRunner

from opmas.cli.tokens import app
from opmas.ingest.tokens import hash_token

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cli_database")]

runner = CliRunner()


async def _rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch("SELECT * FROM api_tokens ORDER BY id"))
    finally:
        await conn.close()


def test_create_prints_the_token_once_and_stores_its_hash(database_url: str) -> None:
    result = runner.invoke(app, ["create", "--name", "router1", "--expires-days", "30"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("opm_")
    assert len(token) > 40

    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "router1" in listed.stdout
    assert "active" in listed.stdout
    assert token not in listed.stdout
    assert token[:12] in listed.stdout


def test_the_database_holds_only_the_sha256(database_url: str) -> None:
    result = runner.invoke(app, ["create", "--name", "client-a"])
    token = result.stdout.strip()
    [row] = asyncio.run(_rows(database_url))
    assert row["token_hash"] == hash_token(token)
    assert row["prefix"] == token[:12]
    assert row["scopes"] == ["ingest"]
    assert token not in str(dict(row))


def test_a_taken_name_and_an_unknown_device_are_errors() -> None:
    assert runner.invoke(app, ["create", "--name", "twice"]).exit_code == 0
    taken = runner.invoke(app, ["create", "--name", "twice"])
    assert taken.exit_code == 1
    assert "exists already" in taken.output
    unknown = runner.invoke(app, ["create", "--name", "x", "--device", "no-such-router"])
    assert unknown.exit_code == 1
    assert "no device with hostname" in unknown.output


def test_revoke_marks_the_token_revoked() -> None:
    runner.invoke(app, ["create", "--name", "old"])
    revoked = runner.invoke(app, ["revoke", "old"])
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(app, ["list"])
    assert "revoked" in listed.stdout
    missing = runner.invoke(app, ["revoke", "never-made"])
    assert missing.exit_code == 1
    assert "no token named" in missing.output
