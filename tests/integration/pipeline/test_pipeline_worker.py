"""Pipeline workers against real PostgreSQL and NATS: one pass from logs.raw to `events` and
findings, partitions leased to replicas, and one finding per burst however the replicas
come and go."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from nats.js.api import DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.agents.fleet_service import FleetStage
from opmas.agents.pack import load_pack
from opmas.bus.connect import Bus
from opmas.bus.partition import partition_of
from opmas.db.engine import plain_dsn
from opmas.instance import Endpoints
from opmas.messages import Finding, RawBatch, RawLog, encode, finding_decoder, new_id
from opmas.pipeline.leases import plan
from opmas.pipeline.worker import PipelineWorker
from opmas.resources import Resources
from opmas.settings import AgentSettings, PipelineSettings, Settings

PARTITIONS = 8
ROUTER = "gw-burst"
ATTACKER = "203.0.113.7"


@pytest.fixture
def pipeline_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "pipeline": PipelineSettings(partitions=PARTITIONS, lease_ttl_s=3, lease_refresh_s=0.3),
            "agents": AgentSettings(heartbeat_s=0.5, rule_poll_s=0.5, update_interval_s=0.1),
        }
    )


@pytest.fixture
def resources(
    pipeline_settings: Settings, database_url: str, nats_url: str, engine: AsyncEngine, bus: Bus
) -> Resources:
    return Resources(
        pipeline_settings, Endpoints(database_url, nats_url, False, False), engine, bus
    )


class Replicas:
    """Pipeline workers started and stopped at will; all stopped at the end."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._running: dict[str, tuple[PipelineWorker, asyncio.Event, asyncio.Task[None]]] = {}

    async def start(self, name: str) -> PipelineWorker:
        worker = PipelineWorker(self._resources, pack=load_pack(), worker=name)
        await worker.__aenter__()
        stop = asyncio.Event()
        self._running[name] = (worker, stop, asyncio.create_task(worker.run(stop)))
        return worker

    async def stop(self, name: str) -> None:
        worker, stop, task = self._running.pop(name)
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            await worker.__aexit__(None, None, None)

    def workers(self) -> list[PipelineWorker]:
        return [worker for worker, _, _ in self._running.values()]

    async def stop_all(self) -> None:
        for name in list(self._running):
            await self.stop(name)


@contextlib.asynccontextmanager
async def replicas(resources: Resources, *names: str) -> AsyncIterator[Replicas]:
    started = Replicas(resources)
    try:
        for name in names:
            await started.start(name)
        yield started
    finally:
        await started.stop_all()


def _line(n: int, router: str = ROUTER, ip: str = ATTACKER) -> str:
    stamp = time.strftime("%b %d %H:%M:%S", time.gmtime())
    return (
        f"<38>{stamp} {router} dropbear[{900 + n}]: Bad password attempt for 'root'"
        f" from {ip}:{50000 + n}"
    )


async def _send(bus: Bus, lines: list[str], source_ip: str = "192.0.2.1") -> list[str]:
    """Publish `lines` as the ingest would (one batch per device partition); their ids."""
    now = time.time()
    items = [RawLog(new_id(), now, line, "tcp", source_ip=source_ip) for line in lines]
    by_partition: dict[int, list[RawLog]] = {}
    for item in items:
        router = item.line.split()[3]
        by_partition.setdefault(partition_of(router, PARTITIONS), []).append(item)
    for partition, group in by_partition.items():
        batch = RawBatch(new_id(), group)
        await bus.js.publish(
            bus.subjects.logs_raw_partition(partition),
            encode(batch),
            headers={"Nats-Msg-Id": batch.batch_id},
        )
    return [item.event_id for item in items]


async def _eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def _findings(bus: Bus, rule: str) -> dict[str, int]:
    """finding id -> largest count published on findings.> for `rule`."""
    seen: dict[str, int] = {}
    sub = await bus.js.subscribe(
        bus.subjects.findings_all, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return seen
            finding = finding_decoder.decode(msg.data)
            if finding.rule_name == rule:
                seen[finding.finding_id] = max(seen.get(finding.finding_id, 0), finding.count)
    finally:
        await sub.unsubscribe()


async def _stored(database_url: str, ids: list[str]) -> int:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM events WHERE event_id = ANY($1::uuid[])", ids)
        )
    finally:
        await conn.close()


def test_plan_spreads_partitions_over_members() -> None:
    owners = plan(["b", "a", "c"], 8)
    assert owners == {0: "a", 1: "b", 2: "c", 3: "a", 4: "b", 5: "c", 6: "a", 7: "b"}
    assert plan([], 8) == {}


async def test_one_pass_stores_every_line_and_finds_the_burst(
    resources: Resources, bus: Bus, database_url: str
) -> None:
    async with replicas(resources) as group:
        worker = await group.start("w1")
        assert await _eventually(lambda: _owns(worker, PARTITIONS))
        ids = await _send(
            bus, [_line(n) for n in range(8)] + ["<30>garbage that parses as nothing"]
        )
        assert await _eventually(lambda: _stored_all(database_url, ids))
        found = await _eventually(lambda: _findings(bus, "ssh-brute-force-fast"))
    assert len(found) == 1
    assert next(iter(found.values())) >= 5


async def _owns(worker: PipelineWorker, n: int) -> bool:
    return len(worker.owned) == n


async def _stored_all(database_url: str, ids: list[str]) -> bool:
    return await _stored(database_url, ids) == len(ids)


async def test_replicas_split_the_partitions_and_one_owns_each(
    resources: Resources, bus: Bus
) -> None:
    async with replicas(resources) as group:
        workers = tuple([await group.start(name) for name in ("w1", "w2", "w3")])
        assert await _eventually(lambda: _split(workers))
        owned = [w.owned for w in workers]
        assert sorted(p for each in owned for p in each) == list(range(PARTITIONS))
        assert all(len(each) in (2, 3) for each in owned)


async def _split(workers: tuple[PipelineWorker, ...]) -> bool:
    owned = [w.owned for w in workers]
    return sum(len(o) for o in owned) == PARTITIONS and all(owned)


async def test_a_burst_over_three_replicas_gives_one_finding(
    resources: Resources, bus: Bus
) -> None:
    async with replicas(resources) as group:
        workers = tuple([await group.start(name) for name in ("w1", "w2", "w3")])
        assert await _eventually(lambda: _split(workers))
        for n in range(10):  # one line at a time: ten batches the three replicas could share
            await _send(bus, [_line(n)])
            await asyncio.sleep(0.05)
        found = await _eventually(lambda: _counted(bus, 10))
    assert len(found) == 1, found


async def _counted(bus: Bus, count: int) -> dict[str, int]:
    found = await _findings(bus, "ssh-brute-force-fast")
    return found if found and max(found.values()) >= count else {}


@pytest.mark.parametrize("change", ["join", "leave"])
async def test_a_replica_joining_or_leaving_mid_burst_still_gives_one_finding(
    resources: Resources, bus: Bus, change: str
) -> None:
    async with replicas(resources) as group:
        first, second = await group.start("w1"), await group.start("w2")
        assert await _eventually(lambda: _split((first, second)))
        await _send(bus, [_line(n) for n in range(3)])  # under the threshold of 5
        assert await _eventually(lambda: _no_backlog(bus))
        owner = partition_of(ROUTER, PARTITIONS)
        holder, other = (first, second) if owner in first.owned else (second, first)
        if change == "join":
            third = await group.start("w3")
            assert await _eventually(lambda: _split((first, second, third)))
            assert owner not in holder.owned  # the router's partition was handed over
        else:
            leaving, staying = holder, other
            await group.stop(leaving.worker)
            assert await _eventually(lambda: _owns(staying, PARTITIONS))
        await _send(bus, [_line(n) for n in range(3, 9)])
        found = await _eventually(lambda: _counted(bus, 9))
    assert len(found) == 1, found


async def _no_backlog(bus: Bus) -> bool:
    info = await bus.js.stream_info(bus.subjects.logs_raw_stream.name)
    consumers = await bus.js.consumers_info(bus.subjects.logs_raw_stream.name)
    return info.state.messages > 0 and all(
        c.num_pending == 0 and c.num_ack_pending == 0 for c in consumers
    )


async def test_a_distributed_attack_gives_one_fleet_finding(
    resources: Resources, bus: Bus, engine: AsyncEngine
) -> None:
    """3 failed logins on each of 10 routers (each under its own thresholds) from one address:
    the workers send per-router signals, the fleet stage sees all ten routers."""
    stop = asyncio.Event()
    settings = resources.settings.agents
    async with (
        replicas(resources, "w1", "w2") as group,
        FleetStage(engine, bus, settings, pack=load_pack()) as fleet,
    ):
        task = asyncio.create_task(fleet.run(stop))
        try:
            workers = tuple(group.workers())
            assert await _eventually(lambda: _split(workers))
            routers = [f"gw-site{n:02d}" for n in range(10)]
            for attempt in range(3):
                await _send(bus, [_line(attempt, router, "198.51.100.23") for router in routers])
                await asyncio.sleep(0.2)
            fleet_found = await _eventually(lambda: _fleet(bus))
            per_router = await _findings(bus, "ssh-brute-force-fast")
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert len(fleet_found) == 1, fleet_found
    finding = next(iter(fleet_found.values()))
    assert finding.details["devices"] == sorted(routers)
    assert finding.details["ip"] == "198.51.100.23"
    assert finding.count == 30
    assert per_router == {}  # no router saw enough on its own


async def _fleet(bus: Bus) -> dict[str, Finding]:
    """The latest version of each fleet SSH finding, once one counts all 30 attempts."""
    latest: dict[str, Finding] = {}
    sub = await bus.js.subscribe(
        bus.subjects.findings_all, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                break
            finding = finding_decoder.decode(msg.data)
            if finding.rule_name == "ssh-brute-force-fleet":
                latest[finding.finding_id] = finding
    finally:
        await sub.unsubscribe()
    return latest if any(f.count >= 30 for f in latest.values()) else {}


async def test_a_redelivered_batch_is_stored_once_and_a_bad_one_dead_lettered(
    resources: Resources, bus: Bus, database_url: str
) -> None:
    """At least once: the same RawBatch twice (a retry with another message id) stores its
    lines once; a message that is no RawBatch goes to dlq.LOGS_RAW and the rest goes on."""
    now = time.time()
    items = [
        RawLog(new_id(), now, _line(n, "gw-dup"), "tcp", source_ip="192.0.2.1") for n in range(3)
    ]
    batch = RawBatch(new_id(), items)
    subject = bus.subjects.logs_raw_partition(partition_of("gw-dup", PARTITIONS))
    async with replicas(resources, "w1") as group:
        (worker,) = group.workers()
        assert await _eventually(lambda: _owns(worker, PARTITIONS))
        for msg_id in ("first", "again"):
            await bus.js.publish(subject, encode(batch), headers={"Nats-Msg-Id": msg_id})
        await bus.js.publish(subject, b"{not a batch", headers={"Nats-Msg-Id": "bad"})
        after = [_line(9, "gw-dup")]
        ids = [item.event_id for item in items] + await _send(bus, after)
        assert await _eventually(lambda: _stored_all(database_url, ids))
        dead = await _eventually(lambda: _dead_letters(bus))
    assert await _stored(database_url, ids) == 4
    assert [msg.data for msg in dead] == [b"{not a batch"]


async def _dead_letters(bus: Bus) -> list[Any]:
    stream = bus.subjects.dlq_stream.name
    info = await bus.js.stream_info(stream)
    if not info.state.messages:
        return []
    return [await bus.js.get_msg(stream, seq) for seq in range(1, info.state.last_seq + 1)]
