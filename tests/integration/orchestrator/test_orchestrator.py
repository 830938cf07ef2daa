"""The orchestrator against real PostgreSQL and NATS: findings stored, incidents, actions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.publish import publish
from opmas.messages import Finding as FindingMessage
from opmas.messages import action_decoder, iso_utc
from opmas.models import AllowlistEntry, Device, Finding, Incident, IntendedAction, Playbook
from opmas.orchestrator.playbooks import PlaybookSpec, save_playbook
from opmas.orchestrator.service import Orchestrator
from opmas.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def finding(**over: Any) -> FindingMessage:
    fields: dict[str, Any] = {
        "finding_id": str(uuid.uuid4()),
        "agent_name": "SecurityAgent",
        "finding_ts_utc": iso_utc(NOW.timestamp()),
        "device_hostname": "r1",
        "device_ip": "192.0.2.1",
        "severity": "error",
        "finding_type": "SshBruteForce",
        "rule_name": "ssh-brute-force-fast",
        "description": "SSH brute force from 203.0.113.7 (5 failed logins in 60 s)",
        "details": {"hostname": "r1", "ip": "203.0.113.7", "count": 5, "window_s": 60},
        "evidence_event_ids": [str(uuid.uuid4())],
        "domain": "security",
        "count": 5,
    }
    fields.update(over)
    return FindingMessage(**fields)


@pytest.fixture
async def orchestrator(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> AsyncIterator[Orchestrator]:
    async with engine.begin() as conn:
        for n in (1, 2, 3):
            await conn.execute(
                Device.__table__.insert().values(
                    hostname=f"r{n}", ip_address=f"192.0.2.{n}", enrolment="enrolled"
                )
            )
    async with Orchestrator(engine, bus, settings) as orch:
        yield orch


async def _all(engine: AsyncEngine, query: Any) -> list[Any]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(query)).all())


async def test_a_finding_is_stored_once_and_its_growing_burst_updates_the_row(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    first = finding()
    await orchestrator.process(first)
    await orchestrator.process(first)  # redelivery
    grown = msgspec.structs.replace(
        first, count=9, last_seen_utc=iso_utc((NOW + timedelta(seconds=30)).timestamp())
    )
    await orchestrator.process(grown)
    await orchestrator.process(first)  # an older version arriving late changes nothing
    rows = await _all(engine, select(Finding))
    assert len(rows) == 1
    row = rows[0]
    assert (row.count, row.device_hostname, row.rule_name) == (9, "r1", "ssh-brute-force-fast")
    assert row.device_id is not None
    assert row.last_seen_at == NOW + timedelta(seconds=30)
    assert row.incident_id is not None
    actions = await _all(engine, select(IntendedAction))
    assert len(actions) == 1, "one proposal per finding, not per version"


async def test_ssh_brute_force_proposes_a_pending_block_of_the_attacker(
    orchestrator: Orchestrator, engine: AsyncEngine, bus: Bus
) -> None:
    sub = await bus.nc.subscribe(bus.subjects.actions("pending"))
    created = await orchestrator.process(finding())
    assert len(created) == 1
    [action] = await _all(engine, select(IntendedAction))
    assert action.status == "pending"
    assert action.action_type == "ssh_command"
    assert action.action_config == {
        "template": "nft_block_ip",
        "args": {"ip": "203.0.113.7", "timeout": "4h"},
    }
    assert action.expires_at is not None
    assert action.incident_id is not None
    assert "203.0.113.7" in (action.description or "")
    msg = await sub.next_msg(timeout=5)
    assert action_decoder.decode(msg.data).action_id == action.id
    await sub.unsubscribe()


async def test_an_auto_step_is_approved_without_a_human(
    orchestrator: Orchestrator, engine: AsyncEngine, bus: Bus
) -> None:
    sub = await bus.nc.subscribe(bus.subjects.actions("approved"))
    crash = finding(
        agent_name="WiFiAgent",
        domain="wifi",
        finding_type="HostapdCrash",
        rule_name="wifi-hostapd-crash",
        description="hostapd crashed",
        details={"hostname": "r1", "event": "process_segfault", "trust": "verified"},
    )
    await orchestrator.process(crash)
    [action] = await _all(engine, select(IntendedAction))
    assert (action.status, action.execution_mode) == ("approved", "auto")
    assert action.action_config == {"template": "wifi_reload"}
    assert [h["state"] for h in action.history] == ["pending", "approved"]
    assert action_decoder.decode((await sub.next_msg(timeout=5)).data).state == "approved"
    await sub.unsubscribe()


async def test_the_same_attacker_on_three_routers_is_one_fleet_wide_incident(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    for n in (1, 2, 3):
        await orchestrator.process(
            finding(
                device_hostname=f"r{n}",
                device_ip=f"192.0.2.{n}",
                details={"hostname": f"r{n}", "ip": "203.0.113.7"},
            )
        )
    incidents = await _all(engine, select(Incident))
    assert len(incidents) == 1
    [incident] = incidents
    assert incident.incident_type == "fleet_attack"
    assert incident.details["devices"] == ["r1", "r2", "r3"]
    assert incident.finding_count == 3
    assert incident.title == "Attack from 203.0.113.7 on 3 routers"
    findings = await _all(engine, select(Finding.incident_id))
    assert findings == [incident.id] * 3
    actions = await _all(engine, select(IntendedAction).order_by(IntendedAction.id))
    blocks = [a for a in actions if a.action_type == "ssh_command"]
    notes = [a for a in actions if a.action_type == "notify"]
    assert len(blocks) == 3, "each router gets its own block proposal"
    assert len(notes) == 1, "the fleet-wide incident is announced once"
    # announced when the second router was hit: the moment the attack became fleet-wide
    assert notes[0].action_config["subject"] == "Fleet-wide attack from 203.0.113.7 on 2 routers"


async def test_another_attacker_or_an_old_incident_opens_a_new_one(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    await orchestrator.process(finding())
    await orchestrator.process(finding(details={"ip": "198.51.100.9"}))
    later = NOW + timedelta(hours=3)
    await orchestrator.process(finding(finding_ts_utc=iso_utc(later.timestamp())))
    assert await _all(engine, select(func.count()).select_from(Incident)) == [3]


async def test_wan_down_while_wifi_clients_drop_is_one_uplink_incident(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    await orchestrator.process(
        finding(
            agent_name="WanAgent",
            domain="wan",
            finding_type="InterfaceDown",
            rule_name="wan-interface-down",
            description="Interface wan went down on r1",
            details={"hostname": "r1", "interface": "wan"},
        )
    )
    await orchestrator.process(
        finding(
            agent_name="WiFiAgent",
            domain="wifi",
            finding_type="HighClientChurn",
            rule_name="wifi-client-churn",
            description="churn",
            finding_ts_utc=iso_utc((NOW + timedelta(seconds=40)).timestamp()),
            details={"hostname": "r1", "interface": "phy0-ap0"},
        )
    )
    [incident] = await _all(engine, select(Incident))
    assert incident.incident_type == "uplink_or_power"
    assert incident.finding_count == 2
    assert incident.correlation_key == "device:r1"


async def test_an_allowlisted_target_is_never_proposed_for_approval(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    async with AsyncSession(engine) as session, session.begin():
        session.add(AllowlistEntry(kind="network", value="203.0.113.0/24", reason="office"))
    await orchestrator.process(finding())
    [action] = await _all(engine, select(IntendedAction))
    assert action.status == "rejected"
    assert action.decided_by == "allowlist"
    assert "203.0.113.0/24" in action.history[-1]["note"]


async def test_unanswered_proposals_expire(orchestrator: Orchestrator, engine: AsyncEngine) -> None:
    await orchestrator.process(finding())
    async with engine.begin() as conn:
        await conn.execute(
            update(IntendedAction).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await orchestrator.expire() == 1
    [action] = await _all(engine, select(IntendedAction))
    assert action.status == "expired"
    assert action.history[-1]["by"] == "orchestrator"


async def test_default_playbooks_load_once_and_a_deleted_one_stays_deleted(
    engine: AsyncEngine, bus: Bus, settings: Settings
) -> None:
    async with Orchestrator(engine, bus, settings):
        pass
    names = await _all(engine, select(Playbook.name))
    assert "block-ssh-brute-force" in names
    async with engine.begin() as conn:
        await conn.execute(delete(Playbook).where(Playbook.name == "block-ssh-brute-force"))
    async with Orchestrator(engine, bus, settings):
        pass
    assert "block-ssh-brute-force" not in await _all(engine, select(Playbook.name))


async def test_findings_published_on_the_bus_are_consumed_by_the_running_component(
    orchestrator: Orchestrator, engine: AsyncEngine, bus: Bus
) -> None:
    message = finding()
    await publish(
        bus,
        bus.subjects.findings("security"),
        msgspec.json.encode(message),
        msg_id=f"{message.finding_id}:5",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(orchestrator.run(stop))
    try:
        for _ in range(100):
            if await _all(engine, select(Finding.finding_uuid)):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert await _all(engine, select(Finding.finding_uuid)) == [uuid.UUID(message.finding_id)]


async def test_a_router_unknown_by_name_is_not_confused_with_one_sharing_its_address(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    # gw-new logs through r1's address (a relay, NAT): its block must not land on r1
    await orchestrator.process(
        finding(device_hostname="gw-new", details={"hostname": "gw-new", "ip": "203.0.113.7"})
    )
    [row] = await _all(engine, select(Finding))
    assert row.device_id is None
    [action] = await _all(engine, select(IntendedAction))
    assert action.device_id is None


async def test_one_batch_with_three_routers_and_a_repeat_gives_one_incident_and_no_duplicates(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    batch = [
        finding(device_hostname=f"r{n}", details={"hostname": f"r{n}", "ip": "203.0.113.7"})
        for n in (1, 2, 3)
    ]
    grown = msgspec.structs.replace(batch[0], count=12)
    await orchestrator.process(*batch, grown, batch[0])
    rows = await _all(engine, select(Finding).order_by(Finding.device_hostname))
    assert [(r.device_hostname, r.count) for r in rows] == [("r1", 12), ("r2", 5), ("r3", 5)]
    [incident] = await _all(engine, select(Incident))
    assert (incident.incident_type, incident.finding_count) == ("fleet_attack", 3)
    types = await _all(engine, select(IntendedAction.action_type))
    assert sorted(types) == ["notify", "ssh_command", "ssh_command", "ssh_command"]


async def test_an_auto_step_in_a_manual_playbook_runs_without_approval(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    spec = PlaybookSpec.model_validate(
        {
            "name": "wan-flap-ifup",
            "trigger_type": "LinkFlapping",
            "trigger_conditions": {"details": {"interface": "wan"}},
            "steps": [
                {"action_type": "ssh_command", "action_config": {"template": "ifup",
                 "args": {"interface": "{interface}"}}, "execution_mode": "auto"},
                {"action_type": "ssh_command", "action_config": {"template": "reboot"}},
            ],
        }
    )  # fmt: skip
    async with AsyncSession(engine) as session, session.begin():
        await save_playbook(session, spec)
    flap = finding(
        agent_name="WanAgent",
        domain="wan",
        finding_type="LinkFlapping",
        rule_name="wan-link-flapping",
        description="wan flapping",
        details={"hostname": "r1", "interface": "wan", "trust": "address"},
    )
    await orchestrator.process(flap)
    actions = await _all(
        engine, select(IntendedAction).where(IntendedAction.playbook_id.is_not(None))
    )
    by_step = {a.action_config["template"]: a for a in actions if a.action_type == "ssh_command"}
    assert by_step["ifup"].status == "approved"
    assert by_step["ifup"].action_config["args"] == {"interface": "wan"}
    assert by_step["reboot"].status == "pending"


async def test_a_finding_after_its_incident_was_resolved_opens_a_new_one(
    orchestrator: Orchestrator, engine: AsyncEngine
) -> None:
    await orchestrator.process(finding())
    async with engine.begin() as conn:
        await conn.execute(update(Incident).values(status="resolved"))
    await orchestrator.process(finding())
    incidents = await _all(engine, select(Incident).order_by(Incident.id))
    assert [i.status for i in incidents] == ["resolved", "new"]
