"""The running pipeline end to end: real clients send, `opmas events list` shows the events."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess, free_port

LOGGER = "/usr/bin/logger"


def _events(env: dict[str, str], cwd: Path, *args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [OPMAS, "events", "list", "--json", "--limit", "1000", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(done.stdout))


def _wait_for_events(
    env: dict[str, str], cwd: Path, count: int, timeout: float = 30.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        events = _events(env, cwd)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


@pytest.fixture
def pipeline(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    port = free_port()
    env = {
        **opmas_env,
        "OPMAS_SYSLOG_UDP_PORT": str(port),
        "OPMAS_SYSLOG_TCP_PORT": str(port),
        "OPMAS_INGEST_AUTH": "off",
    }
    up = start_opmas(["up"], env)
    up.wait_for("ready    api")
    up.wait_for("ready    ingest")
    return {**env, "SYSLOG_PORT": str(port)}


def test_logger_lines_over_udp_and_tcp_become_parsed_events(
    pipeline: dict[str, str], tmp_path: Path
) -> None:
    port = pipeline["SYSLOG_PORT"]
    sends = [
        [
            "--udp",
            "--rfc3164",
            "-t",
            "dropbear",
            "Bad password attempt for 'root' from 203.0.113.9:5555",
        ],
        [
            "--tcp",
            "--rfc5424",
            "-t",
            "hostapd",
            "wlan0: STA aa:bb:cc:dd:ee:01 IEEE 802.11: authenticated",
        ],
        ["--tcp", "--octet-count", "--rfc5424", "-t", "netifd", "Interface 'wan' is now down"],
    ]
    for args in sends:
        subprocess.run(
            [LOGGER, "--server", "127.0.0.1", "--port", port, *args], check=True, timeout=10
        )
    events = _wait_for_events(pipeline, tmp_path, 3)
    by_program = {e["process_name"]: e for e in events}
    assert set(by_program) == {"dropbear", "hostapd", "netifd"}
    assert by_program["dropbear"]["log_source_type"] == "security"
    assert by_program["dropbear"]["transport"] == "udp"
    assert by_program["hostapd"]["log_source_type"] == "wifi"
    assert by_program["hostapd"]["structured_fields"]["mac_address"] == "aa:bb:cc:dd:ee:01"
    assert by_program["netifd"]["log_source_type"] == "wan"
    assert by_program["netifd"]["structured_fields"]["event"] == "interface_down"
    wifi_only = _events(pipeline, tmp_path, "--domain", "wifi")
    assert [e["process_name"] for e in wifi_only] == ["hostapd"]


def test_bad_input_is_kept_and_nothing_crashes(pipeline: dict[str, str], tmp_path: Path) -> None:
    port = int(pipeline["SYSLOG_PORT"])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"<999>Nov 21 10:00:00 r1 weird: pri out of range\n")
        sock.sendall(b"no header at all, just words\n")
        sock.sendall(b"<30>Nov 21 10:00:00 r1 dnsmasq[1]: " + b"x" * (1 << 20) + b"\n")
    # over TCP a NUL ends a frame (logd's log_trailer_null); inside a datagram it is kept
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(
            b"<30>Nov 21 10:00:00 r1 hostapd: nul\x00byte and \xff\xfe bad utf8",
            ("127.0.0.1", port),
        )
    events = _wait_for_events(pipeline, tmp_path, 4)
    assert len(events) == 4
    flags = {flag for e in events for flag in e["flags"]}  # type: ignore[attr-defined]
    assert {"truncated", "invalid_utf8", "nul_replaced"} <= flags
    unparsed = [e for e in events if e["parser_name"] == "unparsed"]
    assert any(e["message"] == "no header at all, just words" for e in unparsed)
    health = httpx.get(f"http://127.0.0.1:{pipeline['OPMAS_HTTP_PORT']}/ready", timeout=5)
    assert health.status_code == 200


def test_http_batch_answered_202_is_stored(pipeline: dict[str, str], tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{pipeline['OPMAS_HTTP_PORT']}"
    body = [
        {
            "message": "wlan1: AP-STA-CONNECTED aa:bb:cc:dd:ee:02",
            "hostname": "ap-1",
            "program": "hostapd",
        },
        "Mon Sep 18 05:56:48 2017 authpriv.info dropbear[29286]: "
        "Child connection from 198.51.100.7:4242",
    ]
    answer = httpx.post(f"{api}/api/v1/logs", json=body, headers={"Idempotency-Key": "k1"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 2
    again = httpx.post(f"{api}/api/v1/logs", json=body, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202
    events = _wait_for_events(pipeline, tmp_path, 2)
    time.sleep(1.0)
    events = _events(pipeline, tmp_path)
    assert len(events) == 2
    assert {e["hostname"] for e in events} >= {"ap-1"}
    bad = httpx.post(f"{api}/api/v1/logs", json=[{"hostname": "x"}])
    assert bad.status_code == 422
    assert "message" in bad.text


def test_replay_sends_a_file_through_the_pipeline_and_summarises(
    pipeline: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "router.log"
    log.write_text(
        "# a logread file\n"
        "Wed Oct 25 23:33:42 2017 daemon.info hostapd: wlan0: STA 1c:4b:d6:3d:4d:0d"
        " IEEE 802.11: authenticated\n"
        "Mon Sep 18 05:56:48 2017 authpriv.info dropbear[29286]: Child connection from"
        " 14.17.121.130:43422\n"
        "Mon Sep 18 05:56:48 2017 daemon.info mystery[1]: nobody parses this\n"
    )
    done = subprocess.run(
        [OPMAS, "replay", str(log), "--hostname", "lab-router", "--rate", "100"],
        env=pipeline,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lines 3  stored 3  parsed 66.7 %" in done.stdout
    events = _events(pipeline, tmp_path, "--device", "lab-router")
    assert {e["transport"] for e in events} == {"replay"}
    assert {e["log_source_type"] for e in events} == {"wifi", "security", "other"}


def test_replay_without_a_running_opmas_says_so(opmas_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "one.log"
    log.write_text("Mon Sep 18 05:56:48 2017 daemon.info x: y\n")
    done = subprocess.run(
        [OPMAS, "replay", str(log)], env=opmas_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "not running" in done.stdout + done.stderr
