"""The rule pack: schema, loader errors with file and line, builder, examples, generated docs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from opmas.agents import docs
from opmas.agents.fleet import SignalCollector
from opmas.agents.offline import parse_lines
from opmas.agents.pack import (
    RulePackError,
    RuleSpec,
    build_rule,
    check_pack,
    load_file,
    load_pack,
    normalize_severity,
)
from opmas.agents.rules.conditions import compile_conditions
from opmas.errors import ConfigError
from opmas.parser.engine import ParserEngine

ROOT = Path(__file__).resolve().parents[3]
PACK = load_pack()
ENGINE = ParserEngine.from_dirs([])

REQUIRED = {
    # WiFi
    "wifi-auth-failure-rate", "wifi-psk-mismatch", "wifi-deauth-flood", "wifi-handshake-failures",
    "wifi-dfs-radar-detected", "wifi-channel-moves", "wifi-hostapd-crash",
    "wifi-hostapd-restart-loop", "wifi-client-churn",
    # Security
    "ssh-brute-force-fast", "ssh-brute-force-slow", "ssh-user-enumeration",
    "ssh-login-after-failures", "luci-login-failures", "firewall-port-scan", "dhcp-new-client-mac",
    # Health
    "oom-killer", "conntrack-table-full", "procd-crash-loop", "wifi-firmware-crash",
    "kernel-panic", "kernel-oops", "unexpected-reboot", "flash-full", "new-log-template",
    # WAN
    "wan-interface-down", "wan-link-flapping", "pppoe-auth-failure", "pppoe-lcp-timeouts",
    "wan-dhcp-failing", "ntp-not-syncing", "dns-upstream-failures", "mwan3-failover",
}  # fmt: skip


def test_pack_loads_without_errors() -> None:
    assert check_pack() == []
    assert len(PACK) >= 25
    assert {rule.name for rule in PACK} >= REQUIRED
    assert len({rule.name for rule in PACK}) == len(PACK)


def test_pack_thresholds_match_the_issue() -> None:
    by_name = {rule.name: rule for rule in PACK}
    assert (
        by_name["wifi-auth-failure-rate"].threshold,
        by_name["wifi-auth-failure-rate"].window_s,
    ) == (25, 60)
    assert (
        by_name["ssh-brute-force-fast"].threshold,
        by_name["ssh-brute-force-fast"].window_s,
    ) == (5, 60)
    assert (
        by_name["ssh-brute-force-slow"].threshold,
        by_name["ssh-brute-force-slow"].window_s,
    ) == (20, 3600)
    assert (by_name["wan-link-flapping"].threshold, by_name["wan-link-flapping"].window_s) == (
        3,
        600,
    )
    assert by_name["wifi-client-churn"].type == "STATISTICAL"
    assert by_name["ssh-login-after-failures"].type == "CORRELATION"
    assert by_name["new-log-template"].type == "MACHINE_LEARNING"
    assert by_name["firewall-port-scan"].distinct == "dst_port"
    assert by_name["ssh-user-enumeration"].conditions[0]["value"] == "ssh_nonexistent_user"
    assert by_name["ssh-username-spray"].distinct == "user"


def test_every_rule_has_agent_severity_and_builds() -> None:
    for rule in PACK:
        assert rule.agent in ("WiFiAgent", "SecurityAgent", "HealthAgent", "WanAgent")
        assert rule.severity in ("info", "warning", "error", "critical")
        assert rule.description
        assert rule.finding_type
        if rule.type == "FLEET":  # no per-router engine: see tests/unit/agents/test_fleet*.py
            assert SignalCollector([rule]).rules == (rule,)
            continue
        assert hasattr(build_rule(rule), "evaluate")


@pytest.mark.parametrize("rule", PACK, ids=lambda rule: rule.name)
def test_examples_parse_to_events_that_match(rule: RuleSpec) -> None:
    if rule.type == "CORRELATION":
        predicates = [compile_conditions(step.conditions) for step in rule.steps or ()]
    else:
        predicates = [compile_conditions(rule.conditions)]
    assert rule.examples
    for line, event in zip(rule.examples, parse_lines(rule.examples, ENGINE), strict=True):
        assert event.parser_name != "unparsed", line
        assert event.log_source_type in rule.reads, line
        assert any(match(event) for match in predicates), (line, event.structured_fields)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("INFO", "info"), ("LOW", "warning"), ("Medium", "warning"), ("HIGH", "error"),
     ("critical", "critical"), ("warning", "warning"), ("bogus", None)],
)  # fmt: skip
def test_severity_names_of_seed_003_are_accepted(given: str, expected: str | None) -> None:
    assert normalize_severity(given) == expected


BAD = """\
agent: SecurityAgent
domain: security
rules:
  - name: ok-rule
    type: PATTERN
    severity: HIGH
    finding_type: Fine
    description: fine
    conditions: [{field: event, operator: '==', value: x}]
    examples: [x]
  - name: unknown-key
    type: PATTERN
    severity: info
    finding_type: Bad
    description: d
    colour: red
    examples: [x]
  - name: bad-operator
    type: PATTERN
    severity: info
    finding_type: Bad
    description: d
    conditions:
      - {field: event, operator: '=~', value: x}
    examples: [x]
  - name: bad-regex
    type: PATTERN
    severity: info
    finding_type: Bad
    description: d
    conditions:
      - {field: message, operator: regex, value: '(?<=a)b'}
    examples: [x]
  - name: bad-severity
    type: PATTERN
    severity: urgent
    finding_type: Bad
    description: d
    examples: [x]
  - name: no-threshold
    type: THRESHOLD
    severity: info
    finding_type: Bad
    description: d
    window_s: 60
    group_by: [ip]
    examples: [x]
"""


def test_bad_file_reports_every_error_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    rules, errors = load_file(path)
    assert [rule.name for rule in rules] == ["ok-rule"]
    assert rules[0].severity == "error"  # HIGH
    assert all(error.path == str(path) for error in errors)
    lines = {error.line for error in errors}
    messages = "\n".join(str(error) for error in errors)
    assert len(errors) == 5, messages
    assert 16 in lines  # the unknown key's own line
    assert "colour" in messages
    assert 24 in lines
    assert "unknown operator" in messages
    assert 32 in lines
    assert "RE2" in messages
    assert 36 in lines
    assert "unknown severity 'urgent'" in messages
    assert "needs 'threshold'" in messages
    with pytest.raises(RulePackError) as raised:
        load_pack([tmp_path], shipped=False)
    assert len(raised.value.errors) == 5
    assert f"{path}:16:" in str(raised.value)


def test_invalid_yaml_and_duplicates_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: [\n")
    (tmp_path / "b.yaml").write_text(BAD.split("  - name: unknown-key")[0] * 1)
    (tmp_path / "c.yaml").write_text(
        BAD.split("  - name: unknown-key")[0]
        + BAD.split("  - name: unknown-key")[0].split("rules:\n")[1]
    )
    errors = check_pack([tmp_path], shipped=False)
    messages = [str(error) for error in errors]
    assert any("invalid YAML" in m and "a.yaml" in m for m in messages)
    assert any("duplicate rule name 'ok-rule'" in m and "c.yaml:11:" in m for m in messages)


def test_a_user_rule_replaces_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        BAD.split("  - name: unknown-key")[0].replace("ok-rule", "ssh-brute-force-fast")
    )
    rules = {rule.name: rule for rule in load_pack([tmp_path])}
    assert rules["ssh-brute-force-fast"].type == "PATTERN"
    assert len(rules) == len(PACK)


def test_unavailable_rule_type_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opmas.agents.rules.correlation", None)
    rule = next(rule for rule in PACK if rule.type == "CORRELATION")
    with pytest.raises(ConfigError, match="rule type CORRELATION not available"):
        build_rule(rule)


def test_docs_rules_md_is_up_to_date() -> None:
    expected = docs.render(PACK)
    assert (ROOT / "docs" / "rules.md").read_text() == expected, (
        "docs/rules.md is stale: python -m opmas.agents.docs > docs/rules.md"
    )
    for rule in PACK:
        assert f"### {rule.name}" in expected
