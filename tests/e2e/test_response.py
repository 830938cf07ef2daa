"""From a log line to a fix, through the running `opmas up`: dropbear brute-force lines over
TCP syslog -> finding -> incident -> pending action -> `opmas actions approve` -> the nft
command run on the router (a real dropbear on loopback) -> result stored and shown.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess, free_port
from tests.peers.dropbear import Dropbear

HOST = "gw-e2e"
ATTACKER = "203.0.113.77"


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OPMAS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"opmas {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def cli_json(env: dict[str, str], cwd: Path, *args: str) -> Any:
    return json.loads(cli(env, cwd, *args, "--json").stdout)


def wait_for(probe: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[Dropbear, Path]]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "router_key"
    key.write_private_key(str(key_file))
    with Dropbear.start(key.export_public_key().decode()) as server:
        yield server, key_file


def send_syslog(port: int, lines: list[str]) -> None:
    payload = "".join(f"{line}\n" for line in lines).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)


def test_brute_force_lines_become_an_approved_block_run_on_the_router(
    start_opmas: type[OpmasProcess],
    opmas_env: dict[str, str],
    tmp_path: Path,
    router: tuple[Dropbear, Path],
) -> None:
    server, key_file = router
    port = free_port()
    env = {**opmas_env, "OPMAS_SYSLOG_TCP_PORT": str(port), "OPMAS_SYSLOG_UDP_PORT": "-1"}
    up = start_opmas(["up"], env)
    up.wait_for("ready    ingest")
    up.wait_for("ready    orchestrator")
    up.wait_for("ready    executor")

    cli(env, tmp_path, "devices", "add", HOST, "--ip", server.host,
        "--ssh-port", str(server.port), "--ssh-user", server.user)  # fmt: skip
    shown = cli(env, tmp_path, "devices", "set-key", HOST, str(key_file))
    assert "PRIVATE KEY" not in shown.stdout

    stamp = datetime.now().strftime("%b %e %H:%M:%S")  # noqa: DTZ005 - syslog local time
    send_syslog(
        port,
        [
            f"<38>{stamp} {HOST} dropbear[3327]: Bad password attempt for 'root'"
            f" from {ATTACKER}:{51000 + n}"
            for n in range(6)
        ],
    )

    findings = wait_for(
        lambda: [
            f
            for f in cli_json(env, tmp_path, "findings", "list")
            if f["rule_name"] == "ssh-brute-force-fast"
        ],
        "the brute-force finding",
    )
    assert findings[0]["device_hostname"] == HOST
    incidents = cli_json(env, tmp_path, "incidents", "list")
    assert [i["incident_type"] for i in incidents] == ["attack"]
    pending = wait_for(
        lambda: cli_json(env, tmp_path, "actions", "list", "--status", "pending"),
        "the proposed block",
    )
    assert len(pending) == 1
    action_id = str(pending[0]["id"])
    assert server.calls() == [], "nothing runs before approval"
    work = json.loads(
        subprocess.run(
            [OPMAS, "status", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True
        ).stdout
    )["work"]
    assert work["actions"] == {"pending": 1}
    assert work["incidents"] == {"new": 1}

    cli(env, tmp_path, "actions", "approve", action_id, "--by", "e2e-admin")
    done = wait_for(
        lambda: [
            a
            for a in cli_json(env, tmp_path, "actions", "list")
            if str(a["id"]) == action_id and a["status"] in ("succeeded", "failed", "timed_out")
        ],
        "the action to finish",
    )
    view = cli_json(env, tmp_path, "actions", "show", action_id)
    assert done[0]["status"] == "succeeded", json.dumps(view, indent=2)

    nft = [call for call in server.calls() if call[0] == "nft"]
    element = f"{{ {ATTACKER} timeout 14400s }}"
    assert ["nft", "add", "element", "inet", "fw4", "opmas_block", element] in nft, nft
    states = [h["state"] for h in view["history"]]
    assert states == ["pending", "approved", "running", "succeeded"]
    assert view["history"][1]["by"] == "e2e-admin"
    assert view["result"]["exit_status"] == 0
    text = cli(env, tmp_path, "actions", "show", action_id).stdout
    for state in states:
        assert state in text
    key_text = key_file.read_text()
    assert key_text.splitlines()[1] not in up.output, "the private key never reaches the logs"
