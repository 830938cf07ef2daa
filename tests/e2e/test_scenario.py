"""The scripted day of 10 routers through the running pipeline: every incident, no other finding.

`opmas up` listens for TCP syslog on loopback; the day's lines go in as logd sends them
(newline-framed RFC 3164 with hostname), then `opmas findings list` is read until it settles.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess, free_port
from tests.scenario.day import Day, build_day
from tests.scenario.score import rules_without_learning, score, set_aside

STORE_TIMEOUT_S = 900.0  # every line stored
SETTLE_S = 20.0  # the finding count must not change for this long (novelty holds 15 s)
POLL_S = 2.0


def _cli_json(env: dict[str, str], cwd: Path, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [OPMAS, *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return list(json.loads(done.stdout))


def _findings(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    return _cli_json(env, cwd, "findings", "list", "--limit", "5000")


def _stored(env: dict[str, str], cwd: Path, expected: int) -> int:
    return len(_cli_json(env, cwd, "events", "list", "--limit", str(min(expected, 100_000))))


def _send(port: int, lines: list[str]) -> None:
    """Every line over one TCP connection, newline-framed, in order."""
    payload = "".join(f"{line}\n" for line in lines).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for start in range(0, len(payload), 1 << 16):
            sock.sendall(payload[start : start + (1 << 16)])


def _settled_findings(env: dict[str, str], cwd: Path, day: Day) -> list[dict[str, Any]]:
    """The findings once every line is stored and their number stopped changing."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    stored = 0
    while stored < len(day.lines):
        assert time.monotonic() < deadline, f"only {stored} of {len(day.lines)} lines stored"
        time.sleep(POLL_S * 2)
        stored = _stored(env, cwd, len(day.lines))
    findings = _findings(env, cwd)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < SETTLE_S:
        assert time.monotonic() < deadline, f"findings still changing: {len(findings)}"
        time.sleep(POLL_S)
        again = _findings(env, cwd)
        if len(again) != len(findings):
            findings, stable_since = again, time.monotonic()
        else:
            findings = again
    return findings


@pytest.fixture
def pipeline(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str]
) -> tuple[OpmasProcess, dict[str, str], int]:
    port = free_port()
    env = {**opmas_env, "OPMAS_SYSLOG_TCP_PORT": str(port), "OPMAS_INGEST_AUTH": "off"}
    up = start_opmas(["up"], env)
    up.wait_for("ready    api", timeout=120)
    up.wait_for("ready    ingest", timeout=120)
    up.wait_for("ready    pipeline", timeout=120)
    return up, env, port


def test_scripted_day_through_the_running_pipeline_gives_every_incident_and_nothing_else(
    pipeline: tuple[OpmasProcess, dict[str, str], int], tmp_path: Path
) -> None:
    up, env, port = pipeline
    day = build_day()
    _send(port, day.lines)
    findings = _settled_findings(env, tmp_path, day)
    unlearned = rules_without_learning()
    kept, aside = set_aside(findings, day, unlearned)
    result = score(kept, day.expected)

    notes = [
        f"scenario day {day.base_date}: {len(day.lines)} lines from {len(day.routers)} routers",
        f"{len(day.injections)} injections, {len(day.expected)} expected findings",
    ]
    if unlearned:
        notes.append(f"no learning hour in {unlearned}: {len(aside)} first-hour findings set aside")
    notes.append(result.summary("running pipeline"))
    print("\n" + "\n".join(notes))  # noqa: T201  # precision and recall, shown with pytest -s
    assert up.proc.poll() is None, up.output
    assert result.recall == 1.0, result.problems(kept)
    assert result.precision == 1.0, result.problems(kept)
