"""`opmas rules apply` as a user runs it, on real servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from opmas.cli.main import app
from opmas.db.engine import plain_dsn

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("cli_database")

GOOD = """\
agent: SecurityAgent
domain: security
rules:
  - name: ssh-root-login
    type: PATTERN
    severity: warning
    finding_type: SshRootLogin
    description: root logged in over SSH on {hostname} from {ip}
    conditions:
      - {field: event, operator: '==', value: ssh_password_auth_succeeded}
      - {field: user, operator: '==', value: root}
    group_by: [hostname, ip]
    examples:
      - "EXAMPLE"
""".replace(
    "EXAMPLE",
    "Sat Nov 21 10:00:01 2026 authpriv.notice dropbear[3327]:"
    " Password auth succeeded for 'root' from 192.168.1.5:51234",
)


async def _rules(database_url: str) -> dict[str, dict[str, object]]:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT r.name, r.rule_type, r.conditions, a.name AS agent FROM agent_rules r"
            " JOIN agents a ON a.id = r.agent_id"
        )
    finally:
        await conn.close()
    return {row["name"]: {**dict(row), "conditions": json.loads(row["conditions"])} for row in rows}


def test_apply_saves_checked_rules_and_replaces_them(tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    result = runner.invoke(app, ["rules", "apply", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 rule(s) saved" in result.output
    saved = asyncio.run(_rules(database_url))["ssh-root-login"]
    assert saved["agent"] == "SecurityAgent"
    assert saved["rule_type"] == "PATTERN"
    assert saved["conditions"]["severity"] == "warning"
    path.write_text(GOOD.replace("severity: warning", "severity: critical"))
    assert runner.invoke(app, ["rules", "apply", str(path)]).exit_code == 0
    rules = asyncio.run(_rules(database_url))
    assert rules["ssh-root-login"]["conditions"]["severity"] == "critical"
    assert len(rules) == 1


def test_apply_refuses_a_bad_file_and_saves_nothing(tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "bad.yaml"
    bad_regex = "      - {field: message, operator: regex, value: '(?<=root) login'}\n"
    path.write_text(GOOD.replace("    group_by:", bad_regex + "    group_by:"))
    result = runner.invoke(app, ["rules", "apply", str(path)])
    assert result.exit_code == 2
    assert "RE2" in result.output
    assert f"{path}:" in result.output  # file and line
    assert "nothing saved" in result.output
    assert asyncio.run(_rules(database_url)) == {}
