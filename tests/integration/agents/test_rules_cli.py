"""`opmas rules apply` and `opmas findings list` as a user runs them, on real servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from opmas.bus.connect import connect_bus
from opmas.bus.streams import delete_streams, ensure_streams
from opmas.cli.main import app
from opmas.db.engine import plain_dsn
from opmas.messages import Finding, encode
from opmas.settings import BusSettings

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


def test_findings_list_reads_the_latest_version_of_each_finding(
    nats_url: str, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPMAS_NATS_URL", nats_url)
    monkeypatch.setenv("OPMAS_BUS__NAMESPACE", bus_settings.namespace)

    def finding(finding_id: str, count: int, severity: str) -> Finding:
        return Finding(
            finding_id=finding_id,
            agent_name="SecurityAgent",
            finding_ts_utc="2026-11-21T10:00:00.000Z",
            device_hostname="gw",
            device_ip="192.0.2.1",
            severity=severity,
            finding_type="SshBruteForce",
            rule_name="ssh-brute-force-fast",
            description=f"{count} failures",
            details={"key": "gw|203.0.113.7", "count": count},
            evidence_event_ids=[],
            domain="security",
            count=count,
        )

    async def publish() -> None:
        async with connect_bus(nats_url, bus_settings) as bus:
            await ensure_streams(bus)
            for item in (
                finding("a", 5, "error"),
                finding("a", 9, "error"),
                finding("b", 1, "info"),
            ):
                await bus.js.publish(bus.subjects.findings("security"), encode(item))

    async def cleanup() -> None:
        async with connect_bus(nats_url, bus_settings) as bus:
            await delete_streams(bus)

    asyncio.run(publish())
    try:
        check_listing()
    finally:
        asyncio.run(cleanup())


def check_listing() -> None:
    result = runner.invoke(app, ["findings", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {f["finding_id"]: f for f in json.loads(result.output)}
    assert set(listed) == {"a", "b"}
    assert listed["a"]["count"] == 9
    only = runner.invoke(app, ["findings", "list", "--json", "--severity", "error"])
    assert [f["finding_id"] for f in json.loads(only.output)] == ["a"]
    assert runner.invoke(app, ["findings", "list", "--severity", "bad"]).exit_code == 2
