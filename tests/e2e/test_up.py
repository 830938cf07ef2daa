"""`opmas up` end to end: embedded servers, readiness, clean stop, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import OPMAS, OpmasProcess, free_port, servers_using


def _get(port: str, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def _wait_ready(port: str, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if _get(port, "/ready").status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"/ready not 200 within {timeout}s")


def test_up_is_ready_then_ctrl_c_leaves_no_server_behind(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    port = opmas_env["OPMAS_HTTP_PORT"]
    up = start_opmas(["up"], opmas_env)
    _wait_ready(port)
    for component in ("api", "maintenance", "pipeline", "fleet", "ingest", "orchestrator"):
        up.wait_for(f"ready    {component}")
    assert f"http://127.0.0.1:{port}" in up.output
    assert str(tmp_path / "data") in up.output
    assert {p.name() for p in up.descendants()} >= {"postgres", "nats-server"}

    assert _get(port, "/health").json() == {"status": "ok"}
    body = _get(port, "/ready").json()
    assert body["database"]
    assert body["nats"]
    assert body["schema_current"]
    metrics = _get(port, "/metrics").text
    assert 'opmas_component_status{component="api",status="ACTIVE"} 1.0' in metrics
    # the pipeline worker runs in a child process; one scrape of `opmas up` includes it
    assert (
        'opmas_component_status{component="pipeline",process="pipeline",status="ACTIVE"} 1.0'
        in metrics
    )
    assert metrics.count("# HELP opmas_consumer_received_total") == 1
    assert 'opmas_pipeline_partitions_owned{process="pipeline"} 16.0' in metrics
    assert _get(port, "/docs").status_code == 200
    assert "/ready" in _get(port, "/openapi.json").json()["paths"]

    status = subprocess.run(
        [OPMAS, "status", "--json"], env=opmas_env, cwd=tmp_path, capture_output=True, text=True
    )
    report = json.loads(status.stdout)
    assert status.returncode == 0, status.stdout + status.stderr
    components = {c["name"]: c["status"] for c in report["processes"][0]["components"]}
    assert components == dict.fromkeys(
        (
            "api",
            "maintenance",
            "pipeline",
            "fleet",
            "ingest",
            "orchestrator",
            "executor",
            "notifier",
        ),
        "ACTIVE",
    )
    children = {c["name"] for p in report["processes"][1:] for c in p["components"]}
    assert children == {"pipeline"}
    assert {s["stream"] for s in report["streams"]} >= {
        "LOGS_RAW",
        "FINDINGS",
        "SIGNALS",
        "ACTIONS",
    }

    assert up.stop(signal.SIGINT) == 0
    assert servers_using(tmp_path / "data") == []


def test_after_kill_9_a_new_up_recovers_with_the_data_intact(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    import asyncio

    import asyncpg

    port = opmas_env["OPMAS_HTTP_PORT"]
    first = start_opmas(["up"], opmas_env)
    _wait_ready(port)
    endpoints = json.loads((tmp_path / "data" / "instance.json").read_text())

    async def _write_then_read(url: str, write: bool) -> str | None:
        conn = await asyncpg.connect(url)
        try:
            if write:
                await conn.execute(
                    "INSERT INTO opmas_config (key, value) VALUES ('probe', '\"kept\"')"
                )
            return await conn.fetchval("SELECT value::text FROM opmas_config WHERE key='probe'")
        finally:
            await conn.close()

    asyncio.run(_write_then_read(endpoints["database_url"], write=True))
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)

    second = start_opmas(["up"], opmas_env)
    restart_s = _wait_ready(port)
    assert restart_s < 15
    endpoints = json.loads((tmp_path / "data" / "instance.json").read_text())
    assert asyncio.run(_write_then_read(endpoints["database_url"], write=False)) == '"kept"'
    assert second.stop(signal.SIGTERM) == 0
    assert servers_using(tmp_path / "data") == []


def test_up_with_urls_set_starts_no_server_of_its_own(
    start_opmas: type[OpmasProcess],
    opmas_env: dict[str, str],
    empty_database_url: str,
    nats_url: str,
    tmp_path: Path,
) -> None:
    port = opmas_env["OPMAS_HTTP_PORT"]
    env = {**opmas_env, "OPMAS_DATABASE_URL": empty_database_url, "OPMAS_NATS_URL": nats_url}
    env["OPMAS_BUS__NAMESPACE"] = f"e{int(time.time() * 1000)}"
    up = start_opmas(["up"], env)
    _wait_ready(port)
    assert not {p.name() for p in up.descendants()} & {"postgres", "nats-server"}
    assert not (tmp_path / "data" / "postgres").exists()
    assert up.stop() == 0


def test_run_one_component_serves_only_it(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    port = opmas_env["OPMAS_HTTP_PORT"]
    api = start_opmas(["run", "api"], opmas_env)
    api.wait_for("ready    api")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    migrate = subprocess.run(  # finds the servers `run api` started, from any directory
        [OPMAS, "migrate"], env=opmas_env, cwd=elsewhere, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    _wait_ready(port)
    assert "maintenance" not in api.output
    assert api.stop() == 0
    assert servers_using(tmp_path / "data") == []
    unknown = subprocess.run([OPMAS, "run", "nope"], env=opmas_env, capture_output=True, text=True)
    assert unknown.returncode == 2
    assert "unknown component" in unknown.stdout + unknown.stderr


def test_one_up_per_data_dir_and_cli_commands_find_it_from_anywhere(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    port = opmas_env["OPMAS_HTTP_PORT"]
    data = tmp_path / "data"
    up = start_opmas(["up"], opmas_env, tmp_path)
    _wait_ready(port)
    recorded = data / "instance.json"
    info = json.loads(recorded.read_text())
    assert info["pid"] == up.proc.pid
    assert info["api_url"] == f"http://127.0.0.1:{port}"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600  # its URLs carry passwords

    second = subprocess.run(
        [OPMAS, "up"],
        env={**opmas_env, "OPMAS_HTTP_PORT": str(free_port())},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert second.stdout == ""
    assert second.stderr.count("\n") == 1, second.stderr
    assert f"pid {up.proc.pid}, started " in second.stderr
    assert f"API http://127.0.0.1:{port}) already runs on {data}" in second.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = subprocess.run(
        [OPMAS, "findings", "list", "--json"],
        env=opmas_env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert json.loads(listed.stdout) == []
    assert list(elsewhere.iterdir()) == []
    assert up.stop(signal.SIGINT) == 0
    assert not recorded.exists()


READY_UNITS = (
    "api",
    "ingest",
    "maintenance",
    "pipeline",
    "fleet",
    "orchestrator",
    "executor",
    "notifier",
)


def test_ctrl_c_in_a_terminal_stops_everything_within_seconds_without_warnings(
    opmas_env: dict[str, str], tmp_path: Path
) -> None:
    """A terminal's Ctrl-C is SIGINT to the whole foreground process group."""
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [OPMAS, "up"],
            env=opmas_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell gives a job
        )
    try:
        deadline = time.monotonic() + 90
        while not all(f"ready    {unit}" in log.read_text() for unit in READY_UNITS):
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        started = time.monotonic()
        os.killpg(up.pid, signal.SIGINT)
        code = up.wait(60)
        stop_s = time.monotonic() - started
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    output = log.read_text()
    assert code == 0, output
    assert stop_s <= 8, f"stopped in {stop_s:.1f} s:\n{output}"
    for warning in ("DrainTimeoutError", "did not drain", "forcing exit", "Traceback", "error"):
        assert warning not in output
    assert output.rstrip().endswith("stopped")
    assert servers_using(tmp_path / "data") == []
