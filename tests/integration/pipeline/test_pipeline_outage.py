"""Pipeline workers through outages: PostgreSQL killed (-9) and started again while batches are
in flight loses and doubles nothing and dead-letters nothing; dead letters an older version
wrote for outages are replayed on start; a bad payload still goes to the DLQ at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from opmas.agents.pack import load_pack
from opmas.bus.connect import Bus
from opmas.bus.dlq import DlqHeader
from opmas.bus.partition import partition_of
from opmas.db import migrate
from opmas.db.engine import create_engine
from opmas.embedded import EmbeddedPostgres, free_port
from opmas.instance import Endpoints
from opmas.messages import ParsedBatch, RawBatch, RawLog, encode, new_id
from opmas.parser.engine import ParserEngine
from opmas.pipeline.worker import PipelineWorker
from opmas.resources import Resources
from opmas.settings import AgentSettings, EmbeddedSettings, PipelineSettings, Settings
from tests.integration.pipeline.test_pipeline_worker import _line, _send, _stored

pytestmark = pytest.mark.integration

PARTITIONS = 8  # as _send spreads the lines


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test alone, on a fixed port so that it can be killed and started
    again where the worker expects it; migrated to head. Durable (fsync, synchronous commit)
    as `opmas up` runs it: a throwaway one loses its last commits to kill -9."""
    server = EmbeddedPostgres(tmp_path / "pg", EmbeddedSettings(postgres_port=free_port()))
    try:
        await migrate.upgrade(await server.start())
        yield server
    finally:
        await server.stop()
        server.remove()


def _settings(settings: Settings, database_url: str) -> Settings:
    return settings.model_copy(
        update={
            "database_url": SecretStr(database_url),
            "pipeline": PipelineSettings(partitions=PARTITIONS, lease_ttl_s=3, lease_refresh_s=0.3),
            "agents": AgentSettings(heartbeat_s=0.5, rule_poll_s=0.5, update_interval_s=0.1),
        }
    )


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, database_url: str, nats_url: str, bus: Bus
) -> AsyncIterator[PipelineWorker]:
    engine = create_engine(database_url)
    resources = Resources(settings, Endpoints(database_url, nats_url, False, False), engine, bus)
    worker = PipelineWorker(resources, pack=load_pack(), worker="w1")
    stop = asyncio.Event()
    try:
        async with worker:
            task = asyncio.create_task(worker.run(stop))
            try:
                yield worker
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    finally:
        await engine.dispose()


async def _until(check: Any, within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.1)


async def _rows(database_url: str, ids: list[str]) -> int:
    """Rows of `events` holding these ids (a line stored twice counts twice); 0 when down."""
    try:
        return await _stored(database_url, ids)
    except (OSError, asyncpg.PostgresError):
        return 0


async def _dead_letters(bus: Bus) -> list[tuple[bytes, dict[str, str]]]:
    stream = bus.subjects.dlq_stream.name
    info = await bus.js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):  # deleted ones leave gaps
            msg = await bus.js.get_msg(stream, seq)
            out.append((msg.data or b"", dict(msg.headers or {})))
    return out


def _kill_9(server: EmbeddedPostgres) -> None:
    """kill -9 of the postmaster and every backend (its own session: one process group)."""
    proc = server.child.proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _routers(prefix: str, n: int) -> list[str]:
    return [_line(i, f"{prefix}{i % 6}", f"198.51.100.{i % 200}") for i in range(n)]


async def test_postgres_killed_and_back_loses_doubles_and_dead_letters_nothing(
    settings: Settings, own_postgres: EmbeddedPostgres, nats_url: str, bus: Bus
) -> None:
    url = own_postgres.url
    config = _settings(settings, url)
    async with running_worker(config, url, nats_url, bus) as worker:
        await _until(lambda: _owns_all(worker), 20, "partitions taken")
        before = await _send(bus, _routers("gw-a", 30))
        await _until(lambda: _all(url, before), 20, "lines stored before the outage")

        _kill_9(own_postgres)
        during = await _send(bus, _routers("gw-b", 60))
        reason = await _until(lambda: _degraded(worker), 15, "outage reported")
        await asyncio.sleep(bus.settings.ack_wait_s * 2)  # past ack_wait: still held
        during += await _send(bus, _routers("gw-c", 40))
        assert await _dead_letters(bus) == []

        await own_postgres.start()
        ids = before + during
        await _until(lambda: _all(url, ids), 60, "every line stored after the restart")
        await _until(lambda: _healthy(worker), 15, "outage over")
        await asyncio.sleep(1.0)  # anything redelivered late would land now

    assert reason.startswith("PostgreSQL failing for")
    assert await _rows(url, ids) == len(ids)  # each line exactly once
    assert await _dead_letters(bus) == []


async def _owns_all(worker: PipelineWorker) -> bool:
    return len(worker.owned) == PARTITIONS


async def _all(url: str, ids: list[str]) -> bool:
    return await _rows(url, ids) >= len(ids)


async def _degraded(worker: PipelineWorker) -> str | None:
    return worker.health()


async def _healthy(worker: PipelineWorker) -> bool:
    return worker.health() is None


async def test_dead_letters_of_past_outages_are_replayed_on_start(
    settings: Settings, database_url: str, nats_url: str, bus: Bus
) -> None:
    """As an older version left them: a RawBatch the store could not write (connection
    refused) and a ParsedBatch of the retired `store` stage are stored; a bad payload, and a
    letter of this version, stay in the DLQ."""
    now = time.time()
    raw = RawBatch(new_id(), [RawLog(new_id(), now, _line(n, "gw-old"), "tcp") for n in range(3)])
    parsed_from = [RawLog(new_id(), now, _line(n, "gw-parsed"), "udp") for n in range(2)]
    events = ParserEngine.from_dirs(settings.parser_dirs).parse_many(parsed_from)
    raw_subject = bus.subjects.logs_raw_partition(partition_of("gw-old", PARTITIONS))
    refused = "StoreError: writing 3 events failed: [Errno 111] Connect call failed ('::1', 5432)"
    letters = [
        (raw_subject, bus.subjects.logs_raw_stream.name, encode(raw), "StoreError", refused, ""),
        (
            bus.subjects.logs_parsed("security"),
            bus.subjects.logs_parsed_stream.name,
            encode(ParsedBatch(new_id(), events)),
            "StoreError",
            "StoreError: writing 2 events failed: connection was closed in the middle of operation",
            "",
        ),
        (raw_subject, bus.subjects.logs_raw_stream.name, b"{bad", "DecodeError", "DecodeError", ""),
        (raw_subject, bus.subjects.logs_raw_stream.name, b"{x", "StoreError", refused, "failed"),
    ]
    for seq, (subject, stream, payload, error_type, error, kind) in enumerate(letters, 10):
        headers: dict[str, str] = {
            DlqHeader.ERROR: error,
            DlqHeader.ERROR_TYPE: error_type,
            DlqHeader.SUBJECT: subject,
            DlqHeader.STREAM: stream,
            DlqHeader.SEQUENCE: str(seq),
            DlqHeader.DELIVERIES: "5",
            DlqHeader.CONSUMER: "store",
        }
        if kind:
            headers[DlqHeader.KIND] = kind
        await bus.js.publish(bus.subjects.dlq(stream), payload, headers=headers)
    config = _settings(settings, database_url)
    ids = [item.event_id for item in raw.items] + [event.event_id for event in events]

    async with running_worker(config, database_url, nats_url, bus) as worker:
        await _until(lambda: _owns_all(worker), 20, "partitions taken")
        await _until(lambda: _all(database_url, ids), 30, "old dead letters stored")
        poison = bus.subjects.logs_raw_partition(0)
        await bus.js.publish(poison, b"not a batch", headers={"Nats-Msg-Id": new_id()})
        await _until(lambda: _letters(bus, 3), 15, "poison dead-lettered")

    assert await _rows(database_url, ids) == len(ids)
    left = await _dead_letters(bus)
    assert [data for data, _ in left] == [b"{bad", b"{x", b"not a batch"]
    _, headers = left[-1]
    assert headers[DlqHeader.KIND] == "permanent"
    assert headers[DlqHeader.DELIVERIES] == "1"


async def _letters(bus: Bus, n: int) -> bool:
    return len(await _dead_letters(bus)) == n
