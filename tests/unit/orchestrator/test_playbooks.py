"""Playbook files, trigger conditions and templating, without servers."""

from __future__ import annotations

import pytest

from opmas.errors import ConfigError
from opmas.orchestrator.allowlist import Allowlist, classify
from opmas.orchestrator.playbooks import MissingField, default_pack, load_file, matches, render


def test_the_default_pack_has_the_playbooks_the_issue_names() -> None:
    pack = {p.trigger_type: p for p in default_pack()}
    assert pack["SshBruteForce"].execution_mode == "manual"
    assert pack["SshBruteForce"].steps[0].action_config["args"]["timeout"] == "4h"
    assert pack["HighAuthFailureRate"].steps[0].action_config["args"]["ban_s"] == 600
    assert pack["HostapdCrash"].execution_mode == "auto"
    assert pack["LinkFlapping"].steps[0].action_type == "notify"
    assert "{proposed_conntrack_max}" in pack["ConntrackTableFull"].steps[0].action_config["text"]


def test_a_wrong_playbook_file_names_the_field() -> None:
    text = "playbooks:\n  - name: x\n    trigger_type: T\n    steps:\n      - action_type: rm\n"
    with pytest.raises(ConfigError, match=r"book.yaml: playbooks.0.steps.0.action_type"):
        load_file(text, "book.yaml")


def test_placeholders_are_filled_and_a_lone_placeholder_keeps_its_type() -> None:
    config = {"template": "t", "args": {"ip": "{ip}", "ban": "{n}", "text": "on {host} now"}}
    out = render(config, {"ip": "203.0.113.7", "n": 600, "host": "r1"})
    assert out == {"template": "t", "args": {"ip": "203.0.113.7", "ban": 600, "text": "on r1 now"}}


def test_a_missing_placeholder_is_refused() -> None:
    with pytest.raises(MissingField, match="mac_address"):
        render({"mac": "{mac_address}"}, {"ip": "1.2.3.4"})


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, True),
        ({"min_severity": "error"}, True),
        ({"min_severity": "critical"}, False),
        ({"devices": ["r1"]}, True),
        ({"devices": ["r2"]}, False),
        ({"agents": ["WiFiAgent"]}, False),
        ({"details": {"interface": ["wan", "wan6"]}}, True),
        ({"details": {"interface": "lan"}}, False),
    ],
)
def test_trigger_conditions(conditions: dict[str, object], expected: bool) -> None:
    context = {
        "severity": "error",
        "hostname": "r1",
        "agent_name": "WanAgent",
        "interface": "wan",
    }
    assert matches(conditions, context) is expected


def test_allowlist_protects_ips_networks_macs_and_routers() -> None:
    entries = [
        (*classify(v), None) for v in ("10.0.0.5", "192.168.0.0/16", "AA-BB-CC-DD-EE-FF", "core-gw")
    ]
    assert [e[0] for e in entries] == ["ip", "network", "mac", "device"]
    allow = Allowlist.of(entries)
    assert allow.check_action("ssh_command", {"args": {"ip": "10.0.0.5"}}, "r1")
    assert allow.check_action("ssh_command", {"args": {"ip": "192.168.7.7"}}, "r1")
    assert allow.check_action("ssh_command", {"args": {"mac": "aa:bb:cc:dd:ee:ff"}}, "r1")
    assert allow.check_action("ssh_command", {"template": "wifi_reload"}, "core-gw")
    assert allow.check_action("ssh_command", {"args": {"ip": "203.0.113.7"}}, "r1") is None
