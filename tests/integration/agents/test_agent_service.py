"""A domain agent against real PostgreSQL and NATS: registration, heartbeat, findings,
restart in the middle of a burst, live rule edits and configuration pushes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import nats.js.errors
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.agents.feed import read_findings
from opmas.agents.pack import load_pack
from opmas.agents.registry import AGENTS
from opmas.agents.service import DomainAgent
from opmas.bus.connect import Bus
from opmas.db.engine import plain_dsn
from opmas.messages import Finding, ParsedBatch, ParsedEvent, RawLog, encode, new_id
from opmas.parser.engine import ParserEngine
from opmas.settings import AgentSettings

ENGINE = ParserEngine.from_dirs([])
SECURITY = AGENTS["agent-security"]
FAST = AgentSettings(heartbeat_s=0.3, rule_poll_s=0.3, update_interval_s=0.1)


def _bad_passwords(count: int, *, ip: str = "203.0.113.7", start: int = 0) -> list[ParsedEvent]:
    now = time.time()
    stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(now))
    raws = [
        RawLog(
            new_id(),
            now,
            f"<38>{stamp} gw-lab dropbear[{900 + n}]: Bad password attempt for 'root'"
            f" from {ip}:{50000 + n}",
            "tcp",
            source_ip="192.0.2.1",
        )
        for n in range(start, start + count)
    ]
    events = ENGINE.parse_many(raws)
    assert {e.structured_fields.get("event") for e in events} == {"ssh_bad_password"}
    return events


async def _send(bus: Bus, events: list[ParsedEvent]) -> None:
    batch = ParsedBatch(new_id(), events)
    await bus.js.publish(
        bus.subjects.logs_parsed("security"), encode(batch), headers={"Nats-Msg-Id": batch.batch_id}
    )


async def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(
    engine: AsyncEngine, bus: Bus, settings: AgentSettings = FAST
) -> AsyncIterator[DomainAgent]:
    stop = asyncio.Event()
    async with DomainAgent(SECURITY, engine, bus, settings) as agent:
        task = asyncio.create_task(agent.run(stop))
        try:
            yield agent
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def _caught_up(bus: Bus) -> bool:
    stream = bus.subjects.logs_parsed_stream.name
    try:
        info = await bus.js.consumer_info(stream, SECURITY.component)
    except nats.js.errors.NotFoundError:
        return False  # not created yet
    last = (await bus.js.stream_info(stream)).state.last_seq
    return bool(info.ack_floor and info.ack_floor.stream_seq == last)


async def _of_rule(bus: Bus, rule: str) -> list[Finding]:
    return [f for f in await read_findings(bus) if f.rule_name == rule]


async def test_agent_registers_loads_the_pack_and_heartbeats(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    beats: list[dict[str, Any]] = []

    async def on_beat(msg: Any) -> None:
        beats.append(json.loads(msg.data))

    sub = await bus.nc.subscribe(bus.subjects.heartbeat("SecurityAgent"), cb=on_beat)
    async with running(engine, bus):
        assert await _eventually(lambda: asyncio.sleep(0, len(beats) >= 2))
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            row = await conn.fetchrow(
                "SELECT id, type, status, last_heartbeat FROM agents WHERE name = 'SecurityAgent'"
            )
            rules = await conn.fetchval(
                "SELECT count(*) FROM agent_rules WHERE agent_id = $1", row["id"]
            )
        finally:
            await conn.close()
    await sub.unsubscribe()
    assert row["type"] == "SECURITY"
    assert row["status"] == "ACTIVE"
    assert row["last_heartbeat"] is not None
    shipped = [r for r in load_pack() if r.agent == "SecurityAgent"]
    assert rules == len(shipped)
    assert beats[-1]["rules"] == len([r for r in shipped if r.type != "FLEET"])  # fleet stage's
    assert beats[-1]["status"] == "ACTIVE"
    assert beats[-1]["domains"] == ["other", "security"]


async def test_a_burst_gives_one_finding_updated_as_it_grows(engine: AsyncEngine, bus: Bus) -> None:
    async with running(engine, bus):
        await _send(bus, _bad_passwords(4))
        await _send(bus, _bad_passwords(8, start=4))
        found = await _eventually(lambda: _of_rule(bus, "ssh-brute-force-fast"), timeout=10)
        await _eventually(lambda: _caught_up(bus))
        await asyncio.sleep(0.5)  # the last update is throttled to update_interval_s
    (finding,) = await _of_rule(bus, "ssh-brute-force-fast")
    assert found[0].finding_id == finding.finding_id
    assert finding.count == 12
    assert finding.details["key"] == "gw-lab|203.0.113.7"
    assert finding.severity == "error"
    assert finding.finding_type == "SshBruteForce"
    assert finding.device_hostname == "gw-lab"
    assert len(finding.evidence_event_ids) == 12
    assert finding.domain == "security"


async def test_restart_in_the_middle_of_a_burst_finds_it_once(
    engine: AsyncEngine, bus: Bus
) -> None:
    async with running(engine, bus):
        await _send(bus, _bad_passwords(3))
        assert await _eventually(lambda: _caught_up(bus))
    assert await _of_rule(bus, "ssh-brute-force-fast") == []  # 3 of 5: nothing yet

    async with running(engine, bus):  # windows rebuilt from the stream: 3 already counted
        await _send(bus, _bad_passwords(3, start=3))
        assert await _eventually(lambda: _caught_up(bus))
        assert await _eventually(lambda: _of_rule(bus, "ssh-brute-force-fast"))

    async with running(engine, bus):  # after the finding opened: the same finding grows
        await _send(bus, _bad_passwords(3, start=6))
        assert await _eventually(lambda: _caught_up(bus))
        await asyncio.sleep(0.5)
    findings = await _of_rule(bus, "ssh-brute-force-fast")
    assert len(findings) == 1, [f.finding_id for f in findings]
    assert findings[0].count == 9


async def test_a_rule_edited_in_agent_rules_takes_effect_within_5_s(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    async with running(engine, bus, AgentSettings()):  # default polling
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            body = json.loads(
                await conn.fetchval(
                    "SELECT conditions FROM agent_rules WHERE name = 'ssh-brute-force-fast'"
                )
            )
            body["threshold"] = 2
            await conn.execute(
                "UPDATE agent_rules SET conditions = $1::jsonb WHERE name = 'ssh-brute-force-fast'",
                json.dumps(body),
            )
        finally:
            await conn.close()
        edited = time.monotonic()
        found: list[Finding] = []
        ip = 0
        while not found and time.monotonic() - edited < 5.0:
            ip += 1
            await _send(bus, _bad_passwords(2, ip=f"198.51.100.{ip}"))
            await asyncio.sleep(0.25)
            found = await _of_rule(bus, "ssh-brute-force-fast")
    assert found, "the edited threshold (2) was not in force 5 s after the edit"


async def test_an_invalid_edit_keeps_the_last_good_rule(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    async with running(engine, bus):
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            await conn.execute(
                "UPDATE agent_rules SET conditions = jsonb_set(conditions, '{conditions}',"
                """ '[{"field": "message", "operator": "regex", "value": "(?<=x)"}]')"""
                " WHERE name = 'ssh-brute-force-fast'"
            )
        finally:
            await conn.close()
        await asyncio.sleep(1.0)  # several polls
        await _send(bus, _bad_passwords(5))
        found = await _eventually(lambda: _of_rule(bus, "ssh-brute-force-fast"))
    assert found
    assert found[0].count >= 5


async def test_configuration_pushed_on_agents_config(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    subject = bus.subjects.agent_config("SecurityAgent")
    async with running(engine, bus):
        reply = await bus.nc.request(subject, b'{"update_interval_s": 2.5}', timeout=5)
        answer = msgspec.json.decode(reply.data)
        assert answer["ok"] is True
        assert answer["config"]["update_interval_s"] == 2.5
        bad = msgspec.json.decode(
            (await bus.nc.request(subject, b'{"max_keys": 5}', timeout=5)).data
        )
        assert bad["ok"] is False
        assert "max_keys" in bad["error"]
        negative = msgspec.json.decode(
            (await bus.nc.request(subject, b'{"heartbeat_s": -1}', timeout=5)).data
        )
        assert negative["ok"] is False
        assert "heartbeat_s" in negative["error"]
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        config = json.loads(
            await conn.fetchval("SELECT config FROM agents WHERE name = $1", "SecurityAgent")
        )
    finally:
        await conn.close()
    assert config["update_interval_s"] == 2.5
    assert "pack_rules" in config


@pytest.mark.parametrize("count", [4])
async def test_one_short_of_the_threshold_gives_nothing(
    engine: AsyncEngine, bus: Bus, count: int
) -> None:
    async with running(engine, bus):
        await _send(bus, _bad_passwords(count))
        assert await _eventually(lambda: _caught_up(bus))
    assert await _of_rule(bus, "ssh-brute-force-fast") == []
