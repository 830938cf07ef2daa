"""The fleet stage against real PostgreSQL and NATS: signal batches from 10 routers give one
fleet finding on findings.security; a restart in the middle of the attack finds it once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import nats.js.errors
from nats.js.api import DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.agents.feed import read_findings
from opmas.agents.fleet import SignalCollector
from opmas.agents.fleet_service import DURABLE, FleetStage
from opmas.agents.pack import load_pack
from opmas.bus.connect import Bus
from opmas.messages import Finding, ParsedEvent, SignalBatch, encode, iso_utc, new_id
from opmas.settings import AgentSettings

FAST = AgentSettings(rule_poll_s=0.3, update_interval_s=0.1)
PACK = load_pack()
ATTACKER = "203.0.113.50"


def _failures(router: int, t0: float) -> list[ParsedEvent]:
    """3 failed SSH logins on router `router`, 17 s apart (event time)."""
    return [
        ParsedEvent(
            event_id=new_id(),
            arrival_ts_utc=iso_utc(t0 + 17 * n),
            source_ip=f"192.0.2.{router}",
            original_ts=None,
            hostname=f"gw-{router:02d}",
            process_name="dropbear",
            pid="900",
            log_level="WARNING",
            facility="authpriv",
            event_type="AUTH",
            message=f"Bad password attempt for 'root' from {ATTACKER}:50000",
            parser_name="dropbear",
            log_source_type="security",
            structured_fields={"event": "ssh_bad_password", "ip": ATTACKER, "user": "root"},
            event_ts=iso_utc(t0 + 17 * n),
        )
        for n in range(3)
    ]


async def _send_router(bus: Bus, router: int, t0: float) -> None:
    """What a pipeline worker does: its collector, drained into one SignalBatch."""
    collector = SignalCollector(PACK)
    for event in _failures(router, t0):
        collector.observe(event)
    batch = SignalBatch(new_id(), collector.drain())
    assert len(batch.signals) == 1
    await bus.js.publish(
        bus.subjects.signals, encode(batch), headers={"Nats-Msg-Id": batch.batch_id}
    )


async def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def _caught_up(bus: Bus) -> bool:
    stream = bus.subjects.signals_stream.name
    try:
        info = await bus.js.consumer_info(stream, DURABLE)
    except nats.js.errors.NotFoundError:
        return False
    last = (await bus.js.stream_info(stream)).state.last_seq
    return bool(info.ack_floor and info.ack_floor.stream_seq == last)


async def _fleet_findings(bus: Bus) -> list[Finding]:
    return [f for f in await read_findings(bus) if f.rule_name == "ssh-brute-force-fleet"]


@contextlib.asynccontextmanager
async def running(engine: AsyncEngine, bus: Bus) -> AsyncIterator[FleetStage]:
    stop = asyncio.Event()
    async with FleetStage(engine, bus, FAST, pack=PACK) as stage:
        task = asyncio.create_task(stage.run(stop))
        try:
            yield stage
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def _published_versions(bus: Bus) -> list[Finding]:
    """Every finding message on findings.security, in order (not merged by id)."""
    sub = await bus.js.subscribe(
        bus.subjects.findings("security"), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    found: list[Finding] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return found
            found.append(msgspec.json.decode(msg.data, type=Finding))
    finally:
        await sub.unsubscribe()


async def test_signals_from_ten_routers_give_exactly_one_fleet_finding(
    engine: AsyncEngine, bus: Bus
) -> None:
    t0 = time.time() - 600
    async with running(engine, bus) as stage:
        for router in range(1, 11):  # 3 failures each, router after router, within 9 minutes
            await _send_router(bus, router, t0 + 54 * (router - 1))
        assert await _eventually(lambda: _caught_up(bus))
        await asyncio.sleep(0.5)  # the last growth is throttled to update_interval_s
        assert "3 fleet rules" in stage.describe()
    versions = await _published_versions(bus)
    assert {f.rule_name for f in versions} == {"ssh-brute-force-fleet"}
    assert len({f.finding_id for f in versions}) == 1
    (finding,) = await _fleet_findings(bus)
    assert finding.count == 30
    assert finding.details["routers"] == 10
    assert finding.details["devices"] == [f"gw-{r:02d}" for r in range(1, 11)]
    assert finding.details["ip"] == ATTACKER
    assert finding.device_hostname is None
    assert finding.domain == "security"
    assert finding.agent_name == "SecurityAgent"
    assert finding.severity == "error"
    assert len(finding.evidence_event_ids) == 20


async def test_a_restart_in_the_middle_of_the_attack_finds_it_once(
    engine: AsyncEngine, bus: Bus
) -> None:
    t0 = time.time() - 600
    async with running(engine, bus):
        for router in range(1, 6):  # 15 failures on 5 routers: under the threshold of 20
            await _send_router(bus, router, t0 + 54 * (router - 1))
        assert await _eventually(lambda: _caught_up(bus))
    assert await _fleet_findings(bus) == []

    async with running(engine, bus):  # windows rebuilt from SIGNALS: 15 already counted
        for router in range(6, 11):
            await _send_router(bus, router, t0 + 54 * (router - 1))
        assert await _eventually(lambda: _caught_up(bus))
        assert await _eventually(lambda: _fleet_findings(bus))
        await asyncio.sleep(0.5)
    (finding,) = await _fleet_findings(bus)
    assert finding.count == 30
    assert finding.details["routers"] == 10
