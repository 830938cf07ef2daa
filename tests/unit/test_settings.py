"""Settings precedence (env > file > defaults), secret handling and masking."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from opmas import environment
from opmas.errors import ConfigError
from opmas.settings import Settings, config_file_path, ensure_secret_key, masked


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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("./my-parsers", [Path("my-parsers")]),
        ("./a,./b", [Path("a"), Path("b")]),
        (" ./a , ./b ,", [Path("a"), Path("b")]),
        ('["./a", "./b"]', [Path("a"), Path("b")]),
        ("", []),
    ],
)
def test_a_list_setting_takes_json_or_comma_separated_values(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[Path]
) -> None:
    monkeypatch.setenv("OPMAS_PARSER_DIRS", value)
    assert Settings().parser_dirs == expected


def test_a_nested_list_setting_takes_comma_separated_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPMAS_RUNTIME__OWN_PROCESS", "parser,store")
    assert Settings().runtime.own_process == ["parser", "store"]
    monkeypatch.setenv("OPMAS_RUNTIME__OWN_PROCESS", "parser")
    assert Settings().runtime.own_process == ["parser"]


def test_broken_json_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPMAS_PARSER_DIRS", "[./a")
    with pytest.raises(ConfigError, match=r"^OPMAS_PARSER_DIRS is not valid JSON"):
        Settings()
    monkeypatch.delenv("OPMAS_PARSER_DIRS")
    monkeypatch.setenv("OPMAS_BUS", "max_deliver=3")
    with pytest.raises(ConfigError, match="set single fields as OPMAS_BUS__FIELD"):
        Settings()


def _explained(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return environment.explain(caught.value, Settings, os.environ, config_file_path())


def test_a_refused_value_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _explained(monkeypatch, OPMAS_HTTP_PORT="abc")
    assert line.startswith('OPMAS_HTTP_PORT="abc": Input should be a valid integer')
    assert "\n" not in line
    line = _explained(monkeypatch, OPMAS_HTTP_PORT="80", OPMAS_RUNTIME__RESTART_BACKOFF_S="-1")
    assert line == 'OPMAS_RUNTIME__RESTART_BACKOFF_S="-1": Input should be greater than 0'


def test_a_refused_secret_is_named_but_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _explained(monkeypatch, OPMAS_DATABASE_URL="mysql://u:hunter2@db/x")
    assert line.startswith("OPMAS_DATABASE_URL: ")
    assert "hunter2" not in line
    monkeypatch.delenv("OPMAS_DATABASE_URL")
    line = _explained(monkeypatch, OPMAS_SECRET_KEY="changeme")
    assert line == "OPMAS_SECRET_KEY is a placeholder: set a real one (or OPMAS_ENV=dev)"


def test_a_value_from_the_file_is_named_by_its_key_there(tmp_path: Path) -> None:
    config = tmp_path / "config" / "opmas_config.yaml"
    config.parent.mkdir()
    config.write_text("htpp_port: 9000\nbus:\n  max_deliver: 0\n")
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = environment.explain(caught.value, Settings, os.environ, config_file_path())
    assert "bus.max_deliver=0 in config/opmas_config.yaml: Input should be greater" in line
    assert "htpp_port in config/opmas_config.yaml is not a setting (did you mean http_port?)" in (
        line
    )


def test_unknown_variables_are_warned_about_with_the_closest_name() -> None:
    env = {
        "OPMAS_HTPP_PORT": "9000",
        "OPMAS_RUNTIME__OWN_PROCES": "parser",
        "OPMAS_NOTHING_LIKE_IT": "1",
        "OPMAS_HTTP_PORT": "9000",
        "OPMAS_RUNTIME__OWN_PROCESS": "parser",
        "OPMAS_BUS__LOGS_RAW__MAX_AGE_S": "60",
        "OPMAS_TEST_DATABASE_URL": "postgresql://x",
        "OPMAS_CHILD_OF": "1",
        "OPMAS_NOTIFY_SECRET": "s",
        "HOME": "/root",
    }
    warnings = environment.unknown_variables(Settings, env)
    assert warnings == [
        "OPMAS_HTPP_PORT is not an OPMAS setting and is ignored (did you mean OPMAS_HTTP_PORT?)",
        "OPMAS_NOTHING_LIKE_IT is not an OPMAS setting and is ignored"
        " (`opmas config show` lists the settings)",
        "OPMAS_RUNTIME__OWN_PROCES is not an OPMAS setting and is ignored"
        " (did you mean OPMAS_RUNTIME__OWN_PROCESS?)",
    ]


def test_every_opmas_variable_the_code_uses_is_known() -> None:
    """Names the code and scripts read are settings or on the allow list, so never warned."""
    root = Path(__file__).resolve().parents[2]
    used: set[str] = set()
    for folder in ("src", "scripts", ".ci", "bench"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in {"", ".py", ".sh"}:
                text = path.read_text("utf-8", "replace")
                used.update(re.findall(r"\bOPMAS_[A-Z0-9_]*[A-Z0-9]\b", text))
    placeholders = {"OPMAS_X", "OPMAS_GROUP__X", "OPMAS_GROUP__FIELD"}  # in docstrings
    assert environment.unknown_variables(Settings, dict.fromkeys(used - placeholders, "")) == []
