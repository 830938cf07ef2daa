"""`opmas devices`: add or update, set-key (stored encrypted), forget-host-key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.devices import app
from opmas.crypto import SecretBox
from opmas.models import Device, SshKey
from tests.integration.cli.conftest import run_db

runner = CliRunner()


def _keys(url: str) -> list[SshKey]:
    async def _get(session: AsyncSession) -> list[SshKey]:
        return list((await session.scalars(select(SshKey).order_by(SshKey.id))).all())

    return run_db(url, _get)


def test_add_then_update_a_device(cli_database: str) -> None:
    added = runner.invoke(app, ["add", "gw", "--ip", "192.0.2.1"])
    assert added.exit_code == 0, added.output
    updated = runner.invoke(app, ["add", "gw", "--ip", "192.0.2.2", "--ssh-port", "2222"])
    assert updated.exit_code == 0, updated.output
    rows = json.loads(runner.invoke(app, ["list", "--json"]).output)
    assert [(r["hostname"], r["ip_address"], r["ssh_port"], r["ssh_user"]) for r in rows] == [
        ("gw", "192.0.2.2", 2222, "root")
    ]
    assert runner.invoke(app, ["add", "ap", "--ip", "not-an-ip"]).exit_code == 2
    taken = runner.invoke(app, ["add", "ap", "--ip", "192.0.2.2"])
    assert taken.exit_code == 1
    assert "already belongs to device gw" in taken.output


def test_set_key_stores_the_key_encrypted_and_prints_only_its_fingerprint(
    cli_database: str, cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["add", "gw", "--ip", "192.0.2.1"]).exit_code == 0
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_ed25519"
    path.write_bytes(key.export_private_key("pkcs8-pem", passphrase="s3cret-pass"))
    monkeypatch.setenv("ROUTER_KEY_PASS", "s3cret-pass")
    fingerprint = key.get_fingerprint("sha256")
    first = runner.invoke(app, ["set-key", "gw", str(path), "--passphrase-env", "ROUTER_KEY_PASS"])
    assert first.exit_code == 0, first.output
    assert fingerprint in first.output
    assert "PRIVATE KEY" not in first.output
    stored = _keys(cli_database)
    assert len(stored) == 1
    assert "PRIVATE KEY" not in stored[0].encrypted_key
    assert (stored[0].key_type, stored[0].key_fingerprint) == ("ssh-ed25519", fingerprint)
    box = SecretBox((cli_env / "secret_key").read_text().strip())
    restored = asyncssh.import_private_key(box.decrypt(stored[0].encrypted_key))
    assert restored.get_fingerprint("sha256") == fingerprint

    other = tmp_path / "id_rsa"
    other.write_bytes(asyncssh.generate_private_key("ssh-rsa").export_private_key("pkcs8-pem"))
    assert runner.invoke(app, ["set-key", "gw", str(other)]).exit_code == 0
    assert [k.is_active for k in _keys(cli_database)] == [False, True]
    listed = json.loads(runner.invoke(app, ["list", "--json"]).output)
    assert listed[0]["key_fingerprint"] == _keys(cli_database)[1].key_fingerprint


def test_set_key_refuses_a_wrong_passphrase_and_an_unknown_device(
    cli_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "id"
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key("pkcs8-pem", passphrase="right"))
    monkeypatch.setenv("PASS", "wrong")
    bad = runner.invoke(app, ["set-key", "gw", str(path), "--passphrase-env", "PASS"])
    assert bad.exit_code == 2
    path.write_bytes(key.export_private_key("openssh"))
    missing = runner.invoke(app, ["set-key", "nope", str(path)])
    assert missing.exit_code == 1
    assert "no device nope" in missing.output
    assert _keys(cli_database) == []


def test_forget_host_key_unpins_it(cli_database: str) -> None:
    assert runner.invoke(app, ["add", "gw", "--ip", "192.0.2.1"]).exit_code == 0

    async def _pin(session: AsyncSession) -> None:
        await session.execute(
            update(Device).values(ssh_host_key="ssh-ed25519 AAAA", ssh_host_key_pinned_at=_now())
        )

    run_db(cli_database, _pin)
    result = runner.invoke(app, ["forget-host-key", "gw"])
    assert result.exit_code == 0, result.output
    assert "forgotten" in result.output
    row = json.loads(runner.invoke(app, ["list", "--json"]).output)[0]
    assert (row["ssh_host_key"], row["ssh_host_key_pinned_at"]) == (None, None)
    assert runner.invoke(app, ["forget-host-key", "nope"]).exit_code == 1


def _now() -> datetime:
    return datetime.now(UTC)
