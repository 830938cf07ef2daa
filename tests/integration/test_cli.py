"""The CLI as a user runs it: help, config show, migrate up and down, status."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opmas.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.mark.parametrize(
    "args", [[], ["up"], ["run"], ["migrate"], ["status"], ["config"], ["config", "show"]]
)
def test_every_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPMAS_SECRET_KEY", "this-is-the-real-secret-key")
    monkeypatch.setenv("OPMAS_DATABASE_URL", "postgresql://opmas:pw-in-url@db:5432/opmas")
    monkeypatch.setenv("OPMAS_HTTP_PORT", "9999")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["http_port"] == 9999
    assert "this-is-the-real-secret-key" not in result.output
    assert "pw-in-url" not in result.output
    table = runner.invoke(app, ["config", "show"])
    assert "OPMAS_HTTP_PORT" in table.output
    assert "this-is-the-real-secret-key" not in table.output


def test_config_error_is_reported_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPMAS_HTTP_PORT", "not-a-port")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "OPMAS_HTTP_PORT" in result.output
    assert "Traceback" not in result.output


def test_migrate_goes_down_to_base_and_up_to_head(
    monkeypatch: pytest.MonkeyPatch, empty_database_url: str
) -> None:
    from opmas.db.migrate import head_revision

    monkeypatch.setenv("OPMAS_DATABASE_URL", empty_database_url)
    up = runner.invoke(app, ["migrate"])
    assert up.exit_code == 0, up.output
    assert f"base -> {head_revision()}" in up.output
    down = runner.invoke(app, ["migrate", "--to", "base"])
    assert down.exit_code == 0, down.output
    assert f"{head_revision()} -> base" in down.output
    show = runner.invoke(app, ["migrate", "--show"])
    assert "current base" in show.output
    bad = runner.invoke(app, ["migrate", "--to", "nope"])
    assert bad.exit_code == 1
    assert "nope" in bad.output


def test_status_without_a_running_opmas_says_so() -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["running"] is False
