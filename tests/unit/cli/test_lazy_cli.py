"""The root command imports a group only when it runs: `--help` and `--version` load none of
them, and every group and command still resolves, one-command groups included."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from opmas.cli.main import OpmasGroup, app

HEAVY = ("sqlalchemy", "asyncssh", "fastapi", "nats", "opmas.process", "opmas.cli.findings")


def _imported_after(args: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from opmas.cli.main import app\n"
        f"sys.argv = ['opmas', *{args!r}]\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), done.stdout
    return {name for name in last.removeprefix("loaded:").split(",") if name}


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_no_command_group(args: list[str]) -> None:
    assert _imported_after(args) == set()


def test_a_group_imports_what_it_needs_only_when_it_runs() -> None:
    loaded = _imported_after(["findings", "--help"])
    assert "opmas.cli.findings" in loaded
    assert "asyncssh" not in loaded
    assert "opmas.process" not in loaded


@pytest.mark.parametrize("name", sorted(OpmasGroup.lazy))
def test_every_command_resolves_with_its_own_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: opmas " + name in " ".join(result.output.split())


def test_a_group_of_one_command_keeps_its_subcommand() -> None:
    result = CliRunner().invoke(app, ["events", "list", "--help"])
    assert result.exit_code == 0, result.output
    assert "--since" in result.output


def test_root_help_lists_every_command_by_its_summary() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, spec in OpmasGroup.lazy.items():
        assert name in result.output
        assert spec.summary.split()[0] in result.output
