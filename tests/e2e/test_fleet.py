"""An attacker under every router's threshold, through the running `opmas up`: 3 failed SSH
logins on each of 10 routers over UDP syslog -> the pipeline's per-router signals -> the fleet
stage -> one ssh-brute-force-fleet finding naming all 10 routers -> one fleet_attack incident.
"""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import OpmasProcess, free_port
from tests.e2e.test_response import cli_json, wait_for

ATTACKER = "198.51.100.23"
ROUTERS = [f"branch-{n:02d}" for n in range(1, 11)]
CONTROL_ATTACKER = "203.0.113.99"  # 6 failures on one router: a per-router finding, as a check
CONTROL_ROUTER = "branch-control"


def bad_password(host: str, ip: str, n: int) -> str:
    stamp = datetime.now().strftime("%b %e %H:%M:%S")  # noqa: DTZ005 - syslog local time
    return (
        f"<84>{stamp} {host} dropbear[{3300 + n}]: Bad password attempt for 'root'"
        f" from {ip}:{51000 + n}"
    )


def send_udp(port: int, lines: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in lines:
            sock.sendto(line.encode(), ("127.0.0.1", port))


@pytest.fixture
def running(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    port = free_port()
    env = {
        **opmas_env,
        "OPMAS_SYSLOG_UDP_PORT": str(port),
        "OPMAS_SYSLOG_TCP_PORT": "-1",
        "OPMAS_INGEST_AUTH": "off",
    }
    up = start_opmas(["up"], env, tmp_path)
    for component in ("ingest", "api", "pipeline", "fleet", "orchestrator"):
        up.wait_for(f"ready    {component}", timeout=120)
    return {**env, "SYSLOG_PORT": str(port)}


def _findings(env: dict[str, str], cwd: Path, rule: str) -> list[dict[str, Any]]:
    found = cli_json(env, cwd, "findings", "list", "--limit", "1000")
    return [f for f in found if f["rule_name"] == rule]


def _fleet_finding(env: dict[str, str], cwd: Path, routers: int) -> dict[str, Any]:
    """The attacker's one fleet finding, once it names `routers` routers."""

    def naming_them() -> list[dict[str, Any]]:
        found = _findings(env, cwd, "ssh-brute-force-fleet")
        return found if found and found[0]["details"].get("routers") == routers else []

    found: list[dict[str, Any]] = wait_for(naming_them, f"the fleet finding of {routers}", 90)
    (finding,) = found
    return finding


def _fleet_incident(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    def of_attacker() -> list[dict[str, Any]]:
        incidents = cli_json(env, cwd, "incidents", "list")
        return [i for i in incidents if i["details"].get("attacker_ip") == ATTACKER]

    found: list[dict[str, Any]] = wait_for(of_attacker, "the fleet incident", 60)
    (incident,) = found
    return incident


def _attack(routers: list[str]) -> list[str]:
    return [bad_password(host, ATTACKER, n) for n in range(3) for host in routers]


def test_three_failures_on_each_of_ten_routers_give_one_fleet_finding_and_incident(
    running: dict[str, str], tmp_path: Path
) -> None:
    env, port = running, int(running["SYSLOG_PORT"])
    send_udp(port, _attack(ROUTERS))
    send_udp(port, [bad_password(CONTROL_ROUTER, CONTROL_ATTACKER, n) for n in range(6)])

    finding = _fleet_finding(env, tmp_path, len(ROUTERS))
    details = finding["details"]
    assert finding["device_hostname"] is None
    assert finding["finding_type"] == "FleetSshBruteForce"
    assert details["ip"] == details["key"] == ATTACKER
    assert details["devices"] == ROUTERS
    assert details["count"] == 3 * len(ROUTERS)
    assert ATTACKER in finding["description"]
    assert all(router in finding["description"] for router in ROUTERS)

    # the control burst proves the per-router rule runs; the attacker never reached it
    control = wait_for(
        lambda: _findings(env, tmp_path, "ssh-brute-force-fast"), "the control finding", 60
    )
    assert [f["details"]["ip"] for f in control] == [CONTROL_ATTACKER]
    assert [f["device_hostname"] for f in control] == [CONTROL_ROUTER]

    incident = _fleet_incident(env, tmp_path)
    assert incident["incident_type"] == "fleet_attack"
    assert incident["details"]["finding_types"] == {"FleetSshBruteForce": 1}
    # the routers the finding named when it opened (>= min_routers); see the test below
    assert 3 <= len(incident["details"]["devices"]) <= len(ROUTERS)
    assert set(incident["details"]["devices"]) <= set(ROUTERS)
    (filed,) = _findings(env, tmp_path, "ssh-brute-force-fleet")
    assert filed["incident_id"] == incident["id"]


def test_routers_a_fleet_finding_adds_later_join_its_incident(
    running: dict[str, str], tmp_path: Path
) -> None:
    env, port = running, int(running["SYSLOG_PORT"])
    send_udp(port, _attack(ROUTERS[:7]))  # 21 failures on 7 routers: the finding opens
    _fleet_finding(env, tmp_path, 7)
    assert len(_fleet_incident(env, tmp_path)["details"]["devices"]) == 7
    send_udp(port, _attack(ROUTERS[7:]))  # the same burst reaches 3 more routers
    _fleet_finding(env, tmp_path, len(ROUTERS))
    assert _fleet_incident(env, tmp_path)["details"]["devices"] == ROUTERS
