"""Faults during a send, as `bench/faults.py` injects them, on `opmas up` at its defaults: a
kill -9 of the embedded PostgreSQL and nats-server loses and doubles no acknowledged HTTP line
and the servers come back by themselves; TCP syslog during a NATS outage leaves nothing
abandoned at a clean stop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
from bench.faults import Database, Sender, SendPlan, tally

from opmas.db.engine import plain_dsn
from tests.e2e.conftest import OPMAS, OpmasProcess, free_port

RATE = 200  # lines/s: the faults are what is measured, not speed


def _ready(process: OpmasProcess) -> None:
    process.wait_for("ready    ingest", timeout=120)
    process.wait_for("ready    pipeline", timeout=120)


def _token(env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [OPMAS, "tokens", "create", "--name", "faults"],
        env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


def _database_url(env: dict[str, str]) -> Callable[[], str]:
    instance = Path(env["OPMAS_DATA_DIR"]) / "instance.json"
    return lambda: plain_dsn(json.loads(instance.read_text())["database_url"])


def _server(process: OpmasProcess, kind: str) -> psutil.Process | None:
    """The live postmaster (`postgres`) or `nats-server` of `opmas up`, if there is one."""
    for proc in process.descendants():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != kind:
                continue
            if kind != "postgres" or proc.ppid() == process.proc.pid:
                return proc
        except psutil.NoSuchProcess:
            continue
    return None


def _kill(process: OpmasProcess, kind: str) -> int:
    server = _server(process, kind)
    assert server is not None, f"no {kind} under opmas up"
    server.send_signal(signal.SIGKILL)
    return server.pid


async def _back(process: OpmasProcess, kind: str, killed: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while (server := _server(process, kind)) is None or server.pid == killed:
        assert time.monotonic() < deadline, f"{kind} not restarted within {within_s:.0f} s"
        await asyncio.sleep(0.5)


async def _stored(db: Database, sender: Sender, transport: str) -> dict[str, Any]:
    """The tally once every line sent over `transport` is stored (or 90 s passed)."""
    ledgers = {name: vars(ledger) for name, ledger in sender.ledgers.items()}
    deadline = time.monotonic() + 90.0
    while True:
        counts = await tally(db, ledgers)
        done = "error" not in counts and counts[transport]["stored"] >= counts[transport]["sent"]
        if done or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(1.0)


async def test_kill9_of_postgres_and_nats_server_during_an_http_send_loses_and_doubles_nothing(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    up = start_opmas(["up"], opmas_env)
    _ready(up)
    api = f"http://127.0.0.1:{opmas_env['OPMAS_HTTP_PORT']}"
    plan = SendPlan("127.0.0.1", 0, 0, api, _token(opmas_env, tmp_path), RATE,
                    transports=("http",), http_deadline_s=120.0)  # fmt: skip
    sender = Sender(plan)
    sending = asyncio.create_task(sender.run())
    await asyncio.sleep(8.0)
    postgres = _kill(up, "postgres")
    await asyncio.sleep(12.0)
    nats = _kill(up, "nats-server")
    await asyncio.sleep(15.0)
    sender.finish()
    await asyncio.wait_for(sending, 180.0)
    await _back(up, "postgres", postgres)
    await _back(up, "nats-server", nats)
    assert [p.pid for p in up.descendants() if p.status() == psutil.STATUS_ZOMBIE] == []
    after = Sender(replace(plan, seq_base=10_000_000))  # the servers are back: is ingest?
    sending = asyncio.create_task(after.run())
    await asyncio.sleep(10.0)
    after.finish()
    await asyncio.wait_for(sending, 180.0)

    http = sender.ledgers["http"]
    assert http.failed == 0, f"batches never answered 202: {http.errors} {http.status}"
    assert after.ledgers["http"].failed == 0, after.ledgers["http"]
    assert after.ledgers["http"].sent, "nothing answered 202 after both servers were back"
    http.sent += after.ledgers["http"].sent
    db = Database(_database_url(opmas_env))
    try:
        counts = await _stored(db, sender, "http")
    finally:
        await db.close()
    assert counts["http"]["lost"] == 0, counts
    assert counts["http"]["duplicated"] == 0, counts
    assert up.stop() == 0


async def test_tcp_lines_during_a_nats_outage_are_kept_through_a_clean_stop(
    start_opmas: type[OpmasProcess], opmas_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**opmas_env, "OPMAS_SYSLOG_TCP_PORT": str(free_port())}
    up = start_opmas(["up"], env)
    _ready(up)
    plan = SendPlan("127.0.0.1", int(env["OPMAS_SYSLOG_TCP_PORT"]), 0, "", "", RATE,
                    transports=("tcp",), http_deadline_s=5.0)  # fmt: skip
    sender = Sender(plan)
    sending = asyncio.create_task(sender.run())
    await asyncio.sleep(5.0)
    _kill(up, "nats-server")
    await asyncio.sleep(10.0)
    sender.finish()
    await asyncio.wait_for(sending, 60.0)
    await asyncio.sleep(3.0)  # what the kernel holds is read before the stop

    assert up.stop() == 0
    assert "lines abandoned" not in up.output
    again = start_opmas(["up"], env)  # the same data dir: what was kept is stored now
    _ready(again)
    db = Database(_database_url(env))
    try:
        counts = await _stored(db, sender, "tcp")
    finally:
        await db.close()
    assert counts["tcp"]["sent"] >= RATE * 10, counts
    assert counts["tcp"]["lost"] == 0, counts
    assert counts["tcp"]["duplicated"] == 0, counts
    assert again.stop() == 0
