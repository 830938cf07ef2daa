"""Embedded PostgreSQL and nats-server: reuse of data, stale pid files, leftover servers."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import nats

from opmas.embedded import EmbeddedNats, EmbeddedPostgres
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
    assert orphan._child.proc is not None
    orphan_pid = orphan._child.proc.pid
    successor = EmbeddedPostgres(tmp_path, EmbeddedSettings(), durable=False)
    url = await successor.start()
    try:
        assert orphan._child.proc.wait(10) is not None
        assert await _query(url, "SELECT 1") == 1
        assert successor._child.proc is not None
        assert successor._child.proc.pid != orphan_pid
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
        assert first._child.proc is not None
        assert first._child.proc.wait(10) is not None
        nc = await nats.connect(url)
        msg = await nc.jetstream().get_msg("KEEP", 1)
        assert msg.data == b"persisted"
        await nc.close()
    finally:
        await second.stop()
