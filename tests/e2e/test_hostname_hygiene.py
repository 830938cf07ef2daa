"""A hostname that is not one, end to end (syslog UDP and HTTP -> parser -> store): stored
with the source address as hostname, flagged, the original kept escaped."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess, free_port


def _events(env: dict[str, str], cwd: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [OPMAS, "events", "list", "--json", "--limit", "100"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(done.stdout))


@pytest.fixture
def running(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    port = free_port()
    env = {**opmas_env, "OPMAS_SYSLOG_UDP_PORT": str(port), "OPMAS_INGEST_AUTH": "off"}
    up = start_opmas(["up"], env, tmp_path)
    up.wait_for("ready    api")
    up.wait_for("ready    ingest")
    return {**env, "SYSLOG_PORT": str(port)}


def test_markup_and_newlines_in_hostnames_never_reach_the_stored_hostname(
    running: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(
            b"<11>Nov 21 10:00:00 r<!channel> dnsmasq[1]: started, version 2.90 cachesize 150",
            ("127.0.0.1", int(running["SYSLOG_PORT"])),
        )
    api = f"http://127.0.0.1:{running['OPMAS_HTTP_PORT']}"
    body = [
        {"message": "cleared cache", "hostname": "r1\nBcc: x@example.org", "program": "dnsmasq"}
    ]
    answer = httpx.post(f"{api}/api/v1/logs", json=body, timeout=10)
    assert answer.status_code == 202, answer.text

    deadline = time.monotonic() + 30
    while len(events := _events(running, tmp_path)) < 2:
        assert time.monotonic() < deadline, events
        time.sleep(0.3)

    claimed = {e["structured_fields"]["claimed_hostname"]: e for e in events}  # type: ignore[index]
    assert set(claimed) == {"r<!channel>", "r1\\nBcc: x@example.org"}
    for event in events:
        assert event["hostname"] == "127.0.0.1"
        assert "invalid_hostname" in event["flags"]  # type: ignore[operator]
