"""`opmas keys rotate`: every stored secret re-encrypted under a new key, all or nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.keys import app
from opmas.crypto import SecretBox
from opmas.errors import SecretError
from opmas.models import Device, NotificationChannel, SshKey
from tests.integration.cli.conftest import run_db

runner = CliRunner()
OLD_KEY = "old-secret-key-0123456789abcdef"
SECRETS = ("ssh-private-key-text", "smtp-password", "webhook-secret")


def _store(url: str, key: str, *, stranger: bool = False) -> None:
    box = SecretBox(key)

    async def _work(session: AsyncSession) -> None:
        device = Device(hostname="gw", ip_address="192.0.2.1")
        session.add(device)
        await session.flush()
        session.add(
            SshKey(
                device_id=device.id,
                key_type="ssh-ed25519",
                encrypted_key=box.encrypt(SECRETS[0]),
                key_fingerprint="SHA256:x",
            )
        )
        for name, secret in zip(("mail", "hook"), SECRETS[1:], strict=True):
            session.add(
                NotificationChannel(name=name, channel_type="email", encrypted_secret=secret)
            )
        session.add(NotificationChannel(name="none", channel_type="slack"))  # no secret at all
        await session.flush()
        channels = await session.scalars(
            select(NotificationChannel).where(NotificationChannel.encrypted_secret.is_not(None))
        )
        for channel in channels:
            other = (
                SecretBox("another-key-0123456789") if stranger and channel.name == "hook" else box
            )
            channel.encrypted_secret = other.encrypt(channel.encrypted_secret or "")

    run_db(url, _work)


def _tokens(url: str) -> list[str]:
    async def _get(session: AsyncSession) -> list[str]:
        keys = list((await session.scalars(select(SshKey.encrypted_key))).all())
        secrets = await session.scalars(
            select(NotificationChannel.encrypted_secret)
            .where(NotificationChannel.encrypted_secret.is_not(None))
            .order_by(NotificationChannel.name)
        )
        return keys + [s for s in secrets if s is not None]

    return run_db(url, _get)


def _write_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key)


def test_rotate_reencrypts_every_secret_and_replaces_the_key_file(
    cli_database: str, cli_env: Path
) -> None:
    _write_key(cli_env / "secret_key", OLD_KEY)
    _store(cli_database, OLD_KEY)
    result = runner.invoke(app, ["rotate"])
    assert result.exit_code == 0, result.output
    assert "3 secret(s) re-encrypted" in result.output
    new_key = (cli_env / "secret_key").read_text().strip()
    assert new_key != OLD_KEY
    assert stat.S_IMODE((cli_env / "secret_key").stat().st_mode) == 0o600
    assert new_key not in result.output
    assert OLD_KEY not in result.output
    tokens = _tokens(cli_database)
    assert sorted(SecretBox(new_key).decrypt(t) for t in tokens) == sorted(SECRETS)
    for token in tokens:
        with pytest.raises(SecretError):
            SecretBox(OLD_KEY).decrypt(token)
    assert not (cli_env / "secret_key.new").exists()


def test_a_secret_under_another_key_stops_the_rotation_and_changes_nothing(
    cli_database: str, cli_env: Path
) -> None:
    _write_key(cli_env / "secret_key", OLD_KEY)
    _store(cli_database, OLD_KEY, stranger=True)
    before = _tokens(cli_database)
    result = runner.invoke(app, ["rotate"])
    assert result.exit_code == 1
    assert "notification_channels.encrypted_secret of row id=" in result.output
    assert _tokens(cli_database) == before
    assert (cli_env / "secret_key").read_text() == OLD_KEY
    assert not (cli_env / "secret_key.new").exists()


def test_a_key_from_the_environment_needs_a_new_key_file(
    cli_database: str, cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPMAS_SECRET_KEY", OLD_KEY)
    _store(cli_database, OLD_KEY)
    refused = runner.invoke(app, ["rotate"])
    assert refused.exit_code == 2
    assert "--new-key-file" in refused.output
    target = tmp_path / "new.key"
    result = runner.invoke(app, ["rotate", "--new-key-file", str(target)])
    assert result.exit_code == 0, result.output
    new_key = target.read_text().strip()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "OPMAS_SECRET_KEY" in result.output
    assert new_key not in result.output
    assert sorted(SecretBox(new_key).decrypt(t) for t in _tokens(cli_database)) == sorted(SECRETS)
    assert not (cli_env / "secret_key").exists()
