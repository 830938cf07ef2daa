"""`opmas up` supervises its embedded servers: a killed PostgreSQL or nats-server is reaped and
started again on its port with its data, the components carry on, and `opmas status` says which
server is down while it is."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess, free_port


def _status(env: dict[str, str], cwd: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [OPMAS, "status", "--json"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    return done.returncode, json.loads(done.stdout)


def _server(up: OpmasProcess, marker: str) -> psutil.Process:
    (found,) = [p for p in up.descendants() if marker in " ".join(p.cmdline())]
    return found


def _restarted(data: Path, name: str, restarts: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        servers = json.loads((data / "servers.json").read_text())
        if servers[name]["up"] and servers[name]["restarts"] == restarts:
            return dict(servers[name])
        assert time.monotonic() < deadline, f"{name} not back: {servers}"
        time.sleep(0.2)


def _stored(env: dict[str, str], cwd: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [OPMAS, "events", "list", "--json", "--limit", "100"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        if done.returncode == 0 and any(e["message"] == text for e in json.loads(done.stdout)):
            return
        assert time.monotonic() < deadline, f"{text!r} never stored"
        time.sleep(0.5)


def _send(port: int, text: str) -> None:
    line = f"<30>Dec  7 10:00:00 gw-super netifd: {text}\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line.encode())


@pytest.fixture
def up(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str]
) -> tuple[OpmasProcess, dict[str, str], int]:
    port = free_port()
    env = {**opmas_env, "OPMAS_SYSLOG_TCP_PORT": str(port), "OPMAS_INGEST_AUTH": "off"}
    process = start_opmas(["up"], env)
    process.wait_for("ready    ingest", timeout=120)
    process.wait_for("ready    pipeline", timeout=120)
    return process, env, port


def test_killed_servers_come_back_and_status_names_the_one_that_is_down(
    up: tuple[OpmasProcess, dict[str, str], int], tmp_path: Path
) -> None:
    process, env, port = up
    data = Path(env["OPMAS_DATA_DIR"])
    nats_server = _server(process, "nats-server")
    nats_server.send_signal(signal.SIGSTOP)  # hung, not dead: nothing to restart
    try:
        code, report = _status(env, tmp_path)
    finally:
        nats_server.send_signal(signal.SIGCONT)
    assert code == 1
    assert report["readiness"]["database"] is True
    assert report["readiness"]["nats"] is False
    assert "nats" in report["readiness"]["errors"]
    assert "database" not in report["readiness"]["errors"]

    worker = _server(process, "opmas run pipeline")
    worker.send_signal(signal.SIGSTOP)  # a stopped process cannot say so: its parent's entry does
    try:
        _, report = _status(env, tmp_path)
    finally:
        worker.send_signal(signal.SIGCONT)
    (pipeline,) = [
        c for p in report["processes"] for c in p["components"] if c["name"] == "pipeline"
    ]
    assert pipeline["status"] == "NOT_ANSWERING", report["processes"]

    for name, marker in (("postgres", "bin/postgres"), ("nats-server", "nats-server")):
        server = _server(process, marker)
        server.kill()
        state = _restarted(data, name, restarts=1)
        assert "killed by SIGKILL" in state["last_exit"]
        assert _server(process, marker).pid != server.pid
    zombies = [p for p in process.descendants() if p.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []

    _send(port, "after both servers were killed")  # ingest, pipeline and store carry on
    _stored(env, tmp_path, "after both servers were killed")
    code, report = _status(env, tmp_path)
    assert code == 0, report
    assert {k: v["restarts"] for k, v in report["servers"].items()} == {
        "postgres": 1,
        "nats-server": 1,
    }
    assert process.proc.poll() is None
    assert process.stop() == 0
