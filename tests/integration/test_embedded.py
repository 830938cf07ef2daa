"""Embedded PostgreSQL and nats-server: reuse of data, stale pid files, leftover servers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import nats
import psutil

from opmas.embedded import EmbeddedNats, EmbeddedPostgres, ServerWatch, server_states
from opmas.settings import EmbeddedSettings


async def _query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        if ";" in sql:
            return await conn.execute(sql)
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_postgres_restart_reuses_data_and_ignores_a_stale_pid_file(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path, EmbeddedSettings(), durable=False)
    url = await first.start()
    await _query(url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    await first.stop()
    # a crash leaves postmaster.pid naming a pid that is now some unrelated process
    (first.pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    second = EmbeddedPostgres(tmp_path, EmbeddedSettings(), durable=False)
    url = await second.start()
    try:
        assert await _query(url, "SELECT v FROM kept") == 42
    finally:
        await second.stop()
        second.remove()  # run as root, the cluster lives outside tmp_path


async def test_postgres_left_running_by_a_dead_owner_is_replaced(tmp_path: Path) -> None:
    orphan = EmbeddedPostgres(tmp_path, EmbeddedSettings(), durable=False)
    await orphan.start()
    assert orphan.child.proc is not None
    orphan_pid = orphan.child.proc.pid
    successor = EmbeddedPostgres(tmp_path, EmbeddedSettings(), durable=False)
    url = await successor.start()
    try:
        assert orphan.child.proc.wait(10) is not None
        assert await _query(url, "SELECT 1") == 1
        assert successor.child.proc is not None
        assert successor.child.proc.pid != orphan_pid
    finally:
        await successor.stop()
        successor.remove()  # run as root, the cluster lives outside tmp_path


async def test_nats_restart_keeps_jetstream_messages_and_replaces_an_orphan(
    tmp_path: Path,
) -> None:
    first = EmbeddedNats(tmp_path, EmbeddedSettings(), sync=True)
    nc = await nats.connect(await first.start())
    js = nc.jetstream()
    await js.add_stream(name="KEEP", subjects=["keep.>"])
    await js.publish("keep.one", b"persisted")
    await nc.close()
    second = EmbeddedNats(tmp_path, EmbeddedSettings(), sync=True)
    url = await second.start()  # first is still running: it must be stopped, not doubled
    try:
        assert first.child.proc is not None
        assert first.child.proc.wait(10) is not None
        nc = await nats.connect(url)
        msg = await nc.jetstream().get_msg("KEEP", 1)
        assert msg.data == b"persisted"
        await nc.close()
    finally:
        await second.stop()


async def _until(check: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_killed_server_is_reaped_and_restarted_on_its_port_with_its_data(
    tmp_path: Path,
) -> None:
    postgres = EmbeddedPostgres(tmp_path, EmbeddedSettings(), durable=True)  # kill -9 loses nothing
    server = EmbeddedNats(tmp_path, EmbeddedSettings(), sync=True)
    pg_url, nats_url = await postgres.start(), await server.start()
    await _query(pg_url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
    nc = await nats.connect(nats_url)
    await nc.jetstream().add_stream(name="KEEP", subjects=["keep.>"])
    await nc.jetstream().publish("keep.one", b"persisted")
    await nc.close()
    watch = ServerWatch([postgres, server], tmp_path)
    try:
        async with watch.running():
            for child in (postgres.child, server.child):
                assert child.proc is not None
                old = psutil.Process(child.proc.pid)
                old.kill()
                # reaped, a new process started, the state file says so
                await _until(lambda c=child, o=old: c.proc is not None and c.proc.pid != o.pid, 60)
                assert not old.is_running() or old.status() != psutil.STATUS_ZOMBIE
                await _until(lambda c=child: server_states(tmp_path)[c.name]["up"], 60)
            states = server_states(tmp_path)
            assert {name: s["restarts"] for name, s in states.items()} == {
                "postgres": 1,
                "nats-server": 1,
            }
            assert "killed by SIGKILL" in states["postgres"]["last_exit"]
            # the same URLs (ports, credentials) reach the same data
            assert await _query(pg_url, "SELECT v FROM kept") == 7
            nc = await nats.connect(nats_url)
            assert (await nc.jetstream().get_msg("KEEP", 1)).data == b"persisted"
            await nc.close()
        assert [p for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE] == []
    finally:
        await server.stop()
        await postgres.stop()
        postgres.remove()
