"""Settings precedence (env > file > defaults), secret handling and masking."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from opmas.errors import ConfigError
from opmas.settings import Settings, ensure_secret_key, masked


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPMAS_HTTP_PORT", "OPMAS_CONFIG_FILE", "OPMAS_DATABASE_URL", "OPMAS_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_listen_on_loopback_8080() -> None:
    settings = Settings()
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.data_dir == Path("opmas-data")
    assert settings.database_url is None
    assert settings.nats_url is None


def test_file_overrides_defaults_and_env_overrides_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config" / "opmas_config.yaml"
    config.parent.mkdir()
    config.write_text("http_port: 9000\nlog_level: debug\nbus:\n  max_deliver: 9\n")
    from_file = Settings()
    assert (from_file.http_port, from_file.log_level, from_file.bus.max_deliver) == (
        9000,
        "debug",
        9,
    )
    monkeypatch.setenv("OPMAS_HTTP_PORT", "9100")
    monkeypatch.setenv("OPMAS_BUS__MAX_DELIVER", "4")
    from_env = Settings()
    assert (from_env.http_port, from_env.log_level, from_env.bus.max_deliver) == (9100, "debug", 4)


def test_named_config_file_that_is_missing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPMAS_CONFIG_FILE", "nope.yaml")
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        Settings()


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "config" / "opmas_config.yaml"
    config.parent.mkdir()
    config.write_text("http_prot: 9000\n")
    with pytest.raises(ValidationError, match="http_prot"):
        Settings()


def test_placeholder_secret_is_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(secret_key=SecretStr("changeme"))
    assert Settings(env="dev", secret_key=SecretStr("changeme")).secret_key is not None


def test_database_url_must_be_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPMAS_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(ValidationError, match="database_url"):
        Settings()


def test_secret_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = ensure_secret_key(settings)
    second = ensure_secret_key(settings)
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.secret_key is not None
    assert second.secret_key is not None
    assert first.secret_key.get_secret_value() == second.secret_key.get_secret_value()
    assert len(first.secret_key.get_secret_value()) >= 32


def test_masked_configuration_hides_secret_and_database_password() -> None:
    settings = Settings(
        secret_key=SecretStr("a-very-real-secret-value"),
        database_url=SecretStr("postgresql://opmas:hunter2@db.example:5432/opmas"),
    )
    shown = masked(settings)
    text = repr(shown)
    assert "hunter2" not in text
    assert "a-very-real-secret-value" not in text
    assert shown["database_url"] == "postgresql://opmas:**********@db.example:5432/opmas"
    assert shown["secret_key"] == "**********"
