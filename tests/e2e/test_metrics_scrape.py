"""One scrape of `opmas up`'s /metrics, children included, is one exposition Prometheus takes."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import OpmasProcess, free_port

PROMTOOL = shutil.which("promtool")
CHILDREN = ("pipeline",)
LINES = (
    "<38>Jan  1 00:00:01 router1 dropbear[1201]: "
    "Bad password attempt for 'root' from 203.0.113.9:5555",
    "<30>Jan  1 00:00:02 router1 hostapd: wlan0: STA aa:bb:cc:dd:ee:01 IEEE 802.11: authenticated",
)


def _scrape(port: str) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain;")  # not OpenMetrics
    return response.text


def _promtool_check(exposition: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True
    )


def _value(exposition: str, metric: str, process: str) -> float:
    """Sum of `metric`'s samples labelled with `process`."""
    pattern = re.compile(rf'^{metric}\{{[^}}]*process="{re.escape(process)}"[^}}]*\}} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(exposition))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: run scripts/install-system-deps")
def test_a_scrape_with_every_child_process_passes_promtool_check_metrics(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    syslog_port = free_port()
    env = {**opmas_env, "OPMAS_SYSLOG_UDP_PORT": str(syslog_port)}
    port = env["OPMAS_HTTP_PORT"]
    up = start_opmas(["up"], env, tmp_path)
    for component in ("api", "ingest", "pipeline", "fleet"):
        up.wait_for(f"ready    {component}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in LINES:
            sock.sendto(line.encode(), ("127.0.0.1", syslog_port))

    # counters that only a child process moves: the pipeline's parsing and storing
    deadline = time.monotonic() + 30
    exposition = _scrape(port)
    while time.monotonic() < deadline and not (
        _value(exposition, "opmas_parser_events_total", "pipeline") >= len(LINES)
        and _value(exposition, "opmas_store_events_stored_total", "pipeline") >= len(LINES)
    ):
        time.sleep(0.3)
        exposition = _scrape(port)

    checked = _promtool_check(exposition)
    # exit 1 with "error while linting": a parse error, Prometheus would drop the whole scrape;
    # exit 3 with lines on stdout: lint problems (names, suffixes) in a scrape that parses
    assert checked.returncode == 0, (checked.returncode, checked.stdout, checked.stderr)
    assert checked.stdout == ""
    assert checked.stderr == ""
    for child in CHILDREN:
        assert f'process="{child}"' in exposition, child
    assert _value(exposition, "opmas_parser_events_total", "pipeline") >= len(LINES)
    assert _value(exposition, "opmas_store_events_stored_total", "pipeline") >= len(LINES)
    assert _value(exposition, "opmas_store_arrival_to_stored_seconds_count", "pipeline") >= 1
    helps = re.findall(r"^# HELP (\S+) ", exposition, re.M)
    assert len(helps) == len(set(helps))
    assert "# HELP opmas_store_events_stored_created " in exposition
    assert up.stop() == 0
