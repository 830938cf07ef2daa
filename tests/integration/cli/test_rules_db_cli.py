"""`opmas rules list|show|enable|disable|export` read what the agents run (`agent_rules`),
marked where it differs from the shipped pack; export writes what `rules apply` reads back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from opmas.agents.pack import load_pack
from opmas.agents.registry import AGENTS, register
from opmas.cli.main import app
from opmas.db.engine import create_engine, plain_dsn

runner = CliRunner()
pytestmark = pytest.mark.integration


def _register_security_agent(database_url: str) -> None:
    """What the security agent does on its first start: load its shipped rules."""

    async def _run() -> None:
        engine = create_engine(database_url)
        try:
            await register(engine, AGENTS["agent-security"], load_pack())
        finally:
            await engine.dispose()

    asyncio.run(_run())


def _rows(database_url: str) -> dict[str, tuple[Any, ...]]:
    async def _fetch() -> dict[str, tuple[Any, ...]]:
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            rows = await conn.fetch(
                "SELECT name, rule_type, description, conditions, is_active, updated_at"
                " FROM agent_rules"
            )
        finally:
            await conn.close()
        return {r["name"]: tuple(r.values()) for r in rows}

    return asyncio.run(_fetch())


def _ok(*args: str) -> str:
    result = runner.invoke(app, ["rules", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _listed() -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(_ok("list", "--json"))}


EDIT = """\
rules:
  - name: ssh-brute-force-fast
    agent: SecurityAgent
    type: THRESHOLD
    severity: critical
    finding_type: SshBruteForce
    description: "{count} failed SSH logins from {ip} on {hostname}"
    enabled: false
    conditions:
      - {field: event, operator: in, value: [ssh_bad_password, ssh_invalid_user]}
    group_by: [hostname, ip]
    threshold: 3
    window_s: 60
    examples:
      - "Sat Nov 21 10:00:01 2026 authpriv.warn dropbear[1]: Bad password attempt
        for 'root' from 203.0.113.7:5"
"""


def test_list_shows_the_database_and_marks_what_differs_from_the_pack(
    cli_database: str, tmp_path: Path
) -> None:
    before = _listed()
    assert before["ssh-brute-force-fast"]["marker"] == "not loaded yet"
    assert before["ssh-brute-force-fast"]["stored"] is False
    _register_security_agent(cli_database)
    loaded = _listed()["ssh-brute-force-fast"]
    assert (loaded["marker"], loaded["stored"], loaded["enabled"]) == ("same as pack", True, True)

    path = tmp_path / "edit.yaml"
    path.write_text(EDIT)
    _ok("apply", str(path))
    edited = _listed()["ssh-brute-force-fast"]
    assert edited["enabled"] is False
    assert edited["severity"] == "critical"
    assert edited["marker"].startswith("edited: ")
    assert {"severity", "threshold"} <= set(edited["edited_fields"])
    assert edited["marker"].endswith("; disabled")
    table = _ok("list")
    assert "ssh-brute-force-fast" in table
    assert "disabled" in table
    shown = json.loads(_ok("show", "ssh-brute-force-fast", "--json"))
    assert (shown["threshold"], shown["enabled"]) == (3, False)


def test_a_rule_of_your_own_is_marked_not_in_pack_and_a_deleted_one_deleted(
    cli_database: str, tmp_path: Path
) -> None:
    _register_security_agent(cli_database)
    path = tmp_path / "mine.yaml"
    path.write_text(EDIT.replace("ssh-brute-force-fast", "my-ssh-rule"))
    _ok("apply", str(path))

    async def _delete() -> None:
        conn = await asyncpg.connect(plain_dsn(cli_database))
        try:
            await conn.execute("DELETE FROM agent_rules WHERE name = 'ssh-user-enumeration'")
        finally:
            await conn.close()

    asyncio.run(_delete())
    listed = _listed()
    assert listed["my-ssh-rule"]["marker"] == "not in pack"
    assert listed["ssh-user-enumeration"]["marker"] == "deleted"


def test_enable_and_disable_switch_the_stored_rule(cli_database: str) -> None:
    _register_security_agent(cli_database)
    out = _ok("disable", "ssh-brute-force-fast")
    assert "disabled; running agents apply it within 2 s" in out
    assert _rows(cli_database)["ssh-brute-force-fast"][4] is False
    assert _listed()["ssh-brute-force-fast"]["marker"] == "disabled"
    assert "already disabled" in _ok("disable", "ssh-brute-force-fast")
    _ok("enable", "ssh-brute-force-fast")
    assert _rows(cli_database)["ssh-brute-force-fast"][4] is True
    assert _listed()["ssh-brute-force-fast"]["marker"] == "same as pack"
    missing = runner.invoke(app, ["rules", "disable", "no-such-rule"])
    assert missing.exit_code == 1
    assert "no rule named no-such-rule" in missing.output


def test_disabling_a_shipped_rule_not_loaded_yet_stores_it_disabled(cli_database: str) -> None:
    assert "loaded from the pack, disabled" in _ok("disable", "wan-link-flapping")
    row = _rows(cli_database)["wan-link-flapping"]
    assert row[4] is False
    assert _listed()["wan-link-flapping"]["marker"] == "disabled"


def test_export_then_apply_changes_nothing(cli_database: str, tmp_path: Path) -> None:
    _register_security_agent(cli_database)
    _ok("disable", "ssh-user-enumeration")
    before = _rows(cli_database)
    out = tmp_path / "rules.yaml"
    assert "rule(s) written to" in _ok("export", "--output", str(out))
    applied = _ok("apply", str(out))
    assert f"{len(before)} rule(s) saved" in applied
    after = _rows(cli_database)
    assert {k: v[:5] for k, v in after.items()} == {k: v[:5] for k, v in before.items()}
    assert _listed()["ssh-user-enumeration"]["marker"] == "disabled"


def test_export_of_named_rules_to_stdout(cli_database: str) -> None:
    _register_security_agent(cli_database)
    text = _ok("export", "ssh-brute-force-fast")
    assert text.startswith("# 1 rule(s) exported from agent_rules")
    assert "name: ssh-brute-force-fast" in text
    assert "ssh-user-enumeration" not in text
    assert runner.invoke(app, ["rules", "export", "nope"]).exit_code == 1
