"""A spoofed log line can never act on a router, through the running `opmas up`: the same
hostapd crash line about an enrolled router, (1) over UDP from another address, (2) over UDP
from the router's registered address, (3) over HTTP with the router's device-bound token. Only
(3) is verified, and only it runs the shipped automatic `wifi reload` on the router (a real
dropbear on loopback); (1) and (2) wait for approval, marked with their trust.
"""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import OpmasProcess, free_port
from tests.e2e.test_response import cli, cli_json, router, wait_for
from tests.peers.dropbear import Dropbear

__all__ = ["router"]  # the dropbear fixture, used below

HOST = "router-a"
SPOOFER = "127.0.0.5"


def crash_line(minutes_ago: int) -> str:
    """A hostapd segfault as the kernel logs it; each one minutes apart (the rule's cooldown
    is 300 s of event time), so each gives a finding of its own."""
    stamp = (datetime.now() - timedelta(minutes=minutes_ago)).strftime("%b %e %H:%M:%S")  # noqa: DTZ005 - syslog local time
    return (
        f"<3>{stamp} {HOST} kernel: [ 1234.567890] hostapd[1685]: segfault at 0"
        " ip 00007f3c sp 00007ffd error 4 in libc.so"
    )


def send_udp(port: int, line: str, source: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(line.encode(), ("127.0.0.1", port))


def crash_actions(env: dict[str, str], cwd: Path, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        actions = [
            a
            for a in cli_json(env, cwd, "actions", "list")
            if "wifi" in (a.get("description") or "").lower()
        ]
        return actions if len(actions) >= count else []

    return sorted(wait_for(found, f"{count} wifi reload action(s)"), key=lambda a: a["id"])


def test_only_a_verified_crash_line_runs_the_automatic_wifi_reload(
    start_opmas: type[OpmasProcess],
    opmas_env: dict[str, str],
    tmp_path: Path,
    router: tuple[Dropbear, Path],
) -> None:
    server, key_file = router
    udp = free_port()
    env = {
        **opmas_env,
        "OPMAS_SYSLOG_UDP_PORT": str(udp),
        "OPMAS_SYSLOG_TCP_PORT": "-1",
        "OPMAS_INGEST__TRUST_REFRESH_S": "1",
    }
    up = start_opmas(["up"], env)
    for component in ("ingest", "api", "orchestrator", "executor", "pipeline"):
        up.wait_for(f"ready    {component}")
    cli(env, tmp_path, "devices", "add", HOST, "--ip", server.host,
        "--ssh-port", str(server.port), "--ssh-user", server.user)  # fmt: skip
    cli(env, tmp_path, "devices", "set-key", HOST, str(key_file))
    token = cli(env, tmp_path, "tokens", "create", "--name", "a", "--device", HOST).stdout.strip()
    time.sleep(2.5)  # ingest and parser reload the enrolled routers every second here

    # 1. anyone, from another address: a finding marked untrusted, an action nobody runs
    send_udp(udp, crash_line(20), SPOOFER)
    (spoofed,) = crash_actions(env, tmp_path, 1)
    assert spoofed["status"] == "pending"
    assert spoofed["evidence_trust"] == "untrusted"
    crashes = [
        f
        for f in cli_json(env, tmp_path, "findings", "list")
        if f["finding_type"] == "HostapdCrash"
    ]
    assert [f["details"]["trust"] for f in crashes] == ["untrusted"]

    # 2. from the router's registered address: spoofable, so it waits for approval
    send_udp(udp, crash_line(12), server.host)
    _, from_address = crash_actions(env, tmp_path, 2)
    assert from_address["status"] == "pending"
    assert from_address["evidence_trust"] == "address"
    assert server.calls() == [], "nothing ran on the router"

    # 3. over the router's own token: verified, the automatic playbook runs as it always did
    response = httpx.post(
        f"http://127.0.0.1:{env['OPMAS_HTTP_PORT']}/api/v1/logs",
        content=crash_line(4),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        timeout=30,
    )
    assert response.status_code == 202, response.text

    def reloaded() -> bool:
        return ["wifi", "reload"] in server.calls()

    wait_for(reloaded, "wifi reload on the router")
    *_, verified = crash_actions(env, tmp_path, 3)
    assert verified["evidence_trust"] == "verified"
    assert verified["status"] in ("running", "succeeded")
    statuses = {a["id"]: a["status"] for a in cli_json(env, tmp_path, "actions", "list")}
    assert statuses[spoofed["id"]] == statuses[from_address["id"]] == "pending"
    assert server.calls().count(["wifi", "reload"]) == 1
