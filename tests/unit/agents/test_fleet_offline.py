"""`opmas rules test` evaluates FLEET rules: the distributed SSH attack of issue 12 (3 failed
logins on each of 10 routers within 9 minutes) yields the fleet finding and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from opmas.agents.offline import read_lines, run_lines
from opmas.agents.pack import load_pack
from opmas.cli.rules import app

DATA = Path(__file__).resolve().parents[2] / "data" / "fleet"
ATTACK = DATA / "distributed-ssh.log"
ROUTERS = [f"gw-{n:02d}" for n in range(1, 11)]


def test_rules_test_over_the_distributed_attack_prints_the_fleet_finding() -> None:
    result = CliRunner().invoke(app, ["test", "--json", str(ATTACK)])
    assert result.exit_code == 0, result.output
    findings = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    (finding,) = findings  # no router reaches its own thresholds: only the fleet finding
    assert finding["rule_name"] == "ssh-brute-force-fleet"
    assert finding["device_hostname"] is None
    assert finding["details"]["ip"] == "203.0.113.50"
    assert finding["details"]["devices"] == ROUTERS
    assert finding["details"]["count"] == 30
    assert finding["evidence_lines"][:3] == [1, 2, 3]  # of the lines that are not comments


def test_rules_test_summary_names_the_fleet_rule() -> None:
    result = CliRunner().invoke(app, ["test", str(ATTACK)])
    assert result.exit_code == 0, result.output
    assert "ssh-brute-force-fleet (FleetSshBruteForce) key=203.0.113.50 count=30" in result.output
    assert "ssh-brute-force-fleet: 30 hit(s)" in result.output


def test_the_same_attack_on_one_router_gives_no_fleet_finding() -> None:
    one_router = [line.replace(line.split()[2], "gw-01") for line in read_lines(ATTACK)]
    report = run_lines(one_router, load_pack())
    rules = {f["rule_name"] for f in report.findings}
    assert "ssh-brute-force-fleet" not in rules
    assert "ssh-brute-force-slow" in rules  # 30 in an hour on one router: the router's rule


def test_rules_test_of_only_the_fleet_rule() -> None:
    report = run_lines(read_lines(ATTACK), load_pack(), rule_name="ssh-brute-force-fleet")
    assert [f["rule_name"] for f in report.findings] == ["ssh-brute-force-fleet"]
    assert report.skipped == {}
