"""Protected targets on a real PostgreSQL: a proposal to block one starts rejected by
`protected-target` with the reason; the router's gateway is learnt from its trusted logs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.messages import Finding as FindingMessage
from opmas.messages import iso_utc
from opmas.models import Device, Event, IntendedAction
from opmas.orchestrator.service import Orchestrator
from opmas.settings import Settings

pytestmark = pytest.mark.integration

OPMAS_IP = "198.51.100.80"


def brute_force(attacker: str) -> FindingMessage:
    return FindingMessage(
        finding_id=str(uuid.uuid4()),
        agent_name="SecurityAgent",
        finding_ts_utc=iso_utc(datetime.now(UTC).timestamp()),
        device_hostname="r1",
        device_ip="203.0.113.11",
        severity="error",
        finding_type="SshBruteForce",
        rule_name="ssh-brute-force-fast",
        description=f"SSH brute force from {attacker}",
        details={"hostname": "r1", "ip": attacker, "count": 5, "window_s": 60},
        evidence_event_ids=[str(uuid.uuid4())],
        domain="security",
        count=5,
    )


@pytest.fixture
async def orchestrator(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> AsyncIterator[Orchestrator]:
    async with engine.begin() as conn:
        for n, enrolment in ((1, "enrolled"), (2, "enrolled"), (3, "discovered")):
            await conn.execute(
                insert(Device).values(
                    hostname=f"r{n}", ip_address=f"203.0.113.1{n}", enrolment=enrolment
                )
            )
    async with Orchestrator(
        engine, bus, settings.model_copy(update={"http_host": OPMAS_IP})
    ) as orch:
        yield orch


async def proposal(
    orchestrator: Orchestrator, engine: AsyncEngine, attacker: str
) -> IntendedAction:
    (action_id,) = await orchestrator.process(brute_force(attacker))
    async with AsyncSession(engine) as session:
        action = await session.get(IntendedAction, action_id)
    assert action is not None
    assert action.action_config["args"]["ip"] == attacker
    return action


@pytest.mark.parametrize(
    ("attacker", "why"),
    [
        ("127.0.0.1", "loopback address"),
        ("10.0.0.1", "private address"),
        ("203.0.113.12", "address of enrolled device r2"),
        (OPMAS_IP, "OPMAS http_host"),
    ],
)
async def test_a_block_of_a_protected_target_is_created_rejected_with_the_reason(
    orchestrator: Orchestrator, engine: AsyncEngine, attacker: str, why: str
) -> None:
    action = await proposal(orchestrator, engine, attacker)

    assert action.status == "rejected"
    assert action.decided_by == "protected-target"
    assert action.decided_at is not None
    assert action.expires_at is None
    assert [h["state"] for h in action.history] == ["pending", "rejected"]
    assert action.history[-1]["by"] == "protected-target"
    assert action.history[-1]["note"].startswith(f"target {attacker} is protected: {why}")


async def test_a_discovered_device_address_and_a_public_address_are_proposed(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    # a device only seen in logs (anyone can make one appear) shields nothing
    assert (await proposal(orchestrator, engine, "203.0.113.13")).status == "pending"
    assert (await proposal(orchestrator, engine, "203.0.113.7")).status == "pending"


async def add_event(engine: AsyncEngine, program: str, fields: dict[str, Any], trust: str) -> None:
    async with AsyncSession(engine) as session, session.begin():
        session.add(
            Event(
                event_id=uuid.uuid4(),
                arrival_ts_utc=datetime.now(UTC),
                source_ip="203.0.113.11",
                hostname="r1",
                process_name=program,
                message="-",
                structured_fields=fields,
                trust=trust,
            )
        )


async def test_the_gateway_and_dns_server_in_the_routers_own_logs_are_protected(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    lease = {"event": "dhcp_lease_obtained", "ip": "198.51.100.20", "server": "198.51.100.1"}
    await add_event(engine, "netifd", lease, "address")
    await add_event(engine, "pppd", {"event": "ppp_dns_address", "ip": "198.51.100.53"}, "verified")
    spoofed = {"event": "ppp_remote_ip", "ip": "203.0.113.66"}  # from anyone: shields nobody
    await add_event(engine, "pppd", spoofed, "untrusted")

    gateway = await proposal(orchestrator, engine, "198.51.100.1")
    dns = await proposal(orchestrator, engine, "198.51.100.53")
    attacker = await proposal(orchestrator, engine, "203.0.113.66")

    assert gateway.status == "rejected"
    assert gateway.history[-1]["note"] == (
        "target 198.51.100.1 is protected: gateway or DNS server of r1 "
        "(dhcp_lease_obtained in its logs)"
    )
    assert dns.status == "rejected"
    assert "ppp_dns_address" in dns.history[-1]["note"]
    assert attacker.status == "pending"


async def test_protected_networks_setting_rejects_a_management_address(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> None:
    async with engine.begin() as conn:  # an enrolled router: enrolment alone does not reject
        await conn.execute(
            insert(Device).values(hostname="r1", ip_address="203.0.113.11", enrolment="enrolled")
        )
    actions = settings.actions.model_copy(update={"protected_networks": ["198.51.100.0/24"]})
    async with Orchestrator(engine, bus, settings.model_copy(update={"actions": actions})) as orch:
        action = await proposal(orch, engine, "198.51.100.9")

    assert action.status == "rejected"
    assert "protected network 198.51.100.0/24" in action.history[-1]["note"]
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(IntendedAction.status))).all() == ["rejected"]
