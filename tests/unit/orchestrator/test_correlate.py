"""Correlation groups, incident types and playbook context, without servers."""

from __future__ import annotations

from typing import Any

from opmas.messages import Finding
from opmas.orchestrator.correlate import (
    classify,
    finding_context,
    group_of,
    merge_details,
    title_of,
)
from opmas.settings import OrchestratorSettings

SETTINGS = OrchestratorSettings()


def _finding(**over: Any) -> Finding:
    fields: dict[str, Any] = {
        "finding_id": "0190f0e0-0000-7000-8000-000000000001",
        "agent_name": "SecurityAgent",
        "finding_ts_utc": "2026-11-22T10:00:00.000Z",
        "device_hostname": "r1",
        "device_ip": "192.0.2.1",
        "severity": "error",
        "finding_type": "SshBruteForce",
        "rule_name": "ssh-brute-force-fast",
        "description": "SSH brute force",
        "details": {"hostname": "r1", "ip": "203.0.113.7", "count": 5},
        "evidence_event_ids": [],
        "domain": "security",
    }
    fields.update(over)
    return Finding(**fields)


def test_a_security_finding_with_an_ip_is_grouped_by_attacker_not_router() -> None:
    one = group_of(_finding(), SETTINGS)
    other = group_of(_finding(device_hostname="r2", details={"ip": "203.0.113.7"}), SETTINGS)
    assert one.key == other.key == "attacker:203.0.113.7"
    assert one.window_s == SETTINGS.attack_window_s


def test_a_finding_without_attacker_is_grouped_by_its_router() -> None:
    group = group_of(
        _finding(domain="wan", finding_type="InterfaceDown", details={"interface": "wan"}),
        SETTINGS,
    )
    assert group.key == "device:r1"
    assert group.attacker_ip is None


def test_an_ip_in_a_non_security_finding_is_not_an_attacker() -> None:
    assert group_of(_finding(domain="wan"), SETTINGS).key == "device:r1"


def test_three_routers_attacked_by_one_ip_make_a_fleet_attack() -> None:
    details: dict[str, Any] = {}
    for host in ("r1", "r2"):
        finding = _finding(device_hostname=host)
        details = merge_details(details, finding, group_of(finding, SETTINGS))
        if host == "r1":
            assert classify(details) == "attack"
    third = _finding(device_hostname="r3")
    details = merge_details(details, third, group_of(third, SETTINGS))
    assert classify(details) == "fleet_attack"
    assert details["devices"] == ["r1", "r2", "r3"]
    assert title_of("fleet_attack", details, "") == "Attack from 203.0.113.7 on 3 routers"


def test_wan_down_with_wifi_client_drops_is_an_uplink_or_power_incident() -> None:
    group = group_of(_finding(domain="wan", finding_type="InterfaceDown", details={}), SETTINGS)
    details = merge_details({}, _finding(domain="wan", finding_type="InterfaceDown"), group)
    assert classify(details) == "device_problem"
    details = merge_details(details, _finding(domain="wifi", finding_type="HighClientChurn"), group)
    assert classify(details) == "uplink_or_power"


def test_context_offers_details_aliases_and_a_proposed_conntrack_size() -> None:
    ctx = finding_context(
        _finding(details={"mac_address": "aa:bb:cc:dd:ee:ff", "hostname": "r1"}), None
    )
    assert ctx["mac"] == "aa:bb:cc:dd:ee:ff"
    assert ctx["hostname"] == "r1"
    assert ctx["conntrack_max"] == 16384
    assert ctx["proposed_conntrack_max"] == 32768
    known = finding_context(_finding(), {"nf_conntrack_max": 65536})
    assert known["proposed_conntrack_max"] == 131072
