"""Ingest while the pipeline is behind: a logs.raw smaller than what is sent, read by a
durable consumer that stops reading. Before the unread part reaches the stream's size (where
JetStream drops its oldest messages, read or not), TCP pauses, UDP drops and counts, HTTP
answers 503 with Retry-After; once the reader catches up every line arrives exactly once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from opmas.bus.connect import Bus
from opmas.messages import RawLog, raw_batch_decoder
from opmas.settings import BusSettings, StreamLimits

from .conftest import ServeApi, StartIngest, send_in_chunks

pytestmark = pytest.mark.integration

STREAM_BYTES = 512 * 1024


@pytest.fixture
def bus_settings(bus_settings: BusSettings) -> BusSettings:
    """The test's bus with a logs.raw of 512 KiB: what is sent below fills it twice."""
    return bus_settings.model_copy(update={"logs_raw": StreamLimits(max_bytes=STREAM_BYTES)})


class SlowReader:
    """A durable consumer of logs.raw, as the pipeline's are, that reads only when told."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._stream = bus.subjects.logs_raw_stream.name
        self.items: list[RawLog] = []

    async def create(self) -> None:
        config = ConsumerConfig(durable_name="slow", ack_policy=AckPolicy.EXPLICIT)
        await self._bus.js.add_consumer(self._stream, config)

    async def read(self, count: int, prefix: str = "", timeout_s: float = 60.0) -> list[RawLog]:
        """Read and ack until `count` lines starting with `prefix` arrived; fails after the
        timeout."""
        sub = await self._bus.js.pull_subscribe_bind("slow", stream=self._stream)
        deadline = time.monotonic() + timeout_s
        try:
            while (got := sum(i.line.startswith(prefix) for i in self.items)) < count:
                assert time.monotonic() < deadline, f"{got} of {count} lines read"
                try:
                    msgs = await sub.fetch(50, timeout=0.5)
                except TimeoutError:
                    continue
                for msg in msgs:
                    self.items.extend(raw_batch_decoder.decode(msg.data).items)
                    await msg.ack()
        finally:
            await sub.unsubscribe()
        return self.items

    async def first_seq(self) -> int:
        info = await self._bus.js.stream_info(self._stream)
        return int(info.state.first_seq)


async def until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.05)


async def test_tcp_pauses_before_the_stream_drops_an_unread_line_and_all_arrive_once(
    start_ingest: StartIngest, bus: Bus
) -> None:
    total = 200_000  # 13 MB: 25 times the stream, more than the socket buffers hold
    lines = [b"<13>r1 behind: line %06d padding-padding-padding" % i for i in range(total)]
    payload = b"".join(line + b"\n" for line in lines)
    reader = SlowReader(bus)
    await reader.create()
    tuning: dict[str, float] = {"batch_size": 200, "max_inflight_batches": 4}
    tuning |= {"max_queued_lines": 2000, "max_unread_bytes": 0, "backlog_poll_s": 0.05}
    async with start_ingest(**tuning) as service:
        _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
        sending = asyncio.create_task(send_in_chunks(writer, payload))
        batcher = service.batcher
        await until(lambda: batcher.paused, 20, "the connection paused")
        await asyncio.sleep(1)
        assert not sending.done()  # the sender holds the rest in its own buffers
        assert batcher.backlog.full
        assert STREAM_BYTES / 2 <= batcher.backlog.unread.bytes < STREAM_BYTES
        assert await reader.first_seq() == 1  # the stream dropped nothing
        assert "MB behind: senders slowed" in service.describe()

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for n in range(50):
                udp.sendto(b"<13>r2 udp while behind %d" % n, ("127.0.0.1", service.ports["udp"]))

        def udp_dropped() -> int:
            service.fold()
            return service.udp_drops["queue_full"]

        await until(udp_dropped, 5, "UDP dropped")

        items = await reader.read(total, prefix="<13>r1")
        await asyncio.wait_for(sending, 30)
        writer.close()
    tcp = sorted(i.line.encode() for i in items if i.line.startswith("<13>r1"))
    assert tcp == sorted(lines)
    assert len({i.event_id for i in items}) == len(items)
    assert not batcher.backlog.full


async def test_http_is_503_with_retry_after_while_the_pipeline_is_behind_then_202(
    serve_api: ServeApi, bus: Bus
) -> None:
    reader = SlowReader(bus)
    await reader.create()
    body = "".join(f"r3 http line {n}\n" for n in range(150))
    headers = {"Content-Type": "text/plain"}
    async with serve_api(max_unread_bytes=1000, backlog_poll_s=0.05) as client:
        first = await client.post("/api/v1/logs", content=body, headers=headers)
        assert first.status_code == 202  # nothing was unread yet
        await asyncio.sleep(0.1)
        refused = await client.post(
            "/api/v1/logs", content=body, headers=headers | {"Idempotency-Key": "k2"}
        )
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        detail = refused.json()["detail"]
        assert "pipeline 0.0 MB behind" in detail
        assert "OPMAS_INGEST__MAX_UNREAD_BYTES" in detail

        await reader.read(150)
        for _ in range(50):  # a client retrying with the same key, as told by the 503
            retried = await client.post(
                "/api/v1/logs", content=body, headers=headers | {"Idempotency-Key": "k2"}
            )
            if retried.status_code != 503:
                break
            await asyncio.sleep(0.1)
        assert retried.status_code == 202
        items = await reader.read(300)
    assert sorted(i.line for i in items) == sorted(body.splitlines() * 2)
