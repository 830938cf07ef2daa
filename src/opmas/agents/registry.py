"""The agents and their rules in PostgreSQL (`agents`, `agent_rules`).

A rule row keeps its name, type, description and enabled flag in columns and the rest of its
definition (severity, finding type, conditions, thresholds...) as JSON in `conditions`. A
row holding only a list of conditions (seed 002's form) is read as a PATTERN rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opmas.agents.pack import AGENT_DOMAINS, RulePackError, RuleSpec, check_rule_data
from opmas.errors import ConfigError
from opmas.models import Agent, AgentRule, AgentState

log = structlog.get_logger(__name__)

COLUMNS = ("name", "type", "description", "enabled", "agent")  # kept outside the JSON
PACK_SEEN = "pack_rules"  # agents.config key: shipped rules already loaded once


@dataclass(frozen=True)
class AgentIdentity:
    """One domain agent: its component name, its name in `agents`, type and domain."""

    component: str
    name: str
    type: str
    domain: str

    @property
    def description(self) -> str:
        return f"{self.domain} domain agent: rules over logs.parsed.{self.domain}"


AGENTS = {
    ident.component: ident
    for ident in (
        AgentIdentity("agent-wifi", "WiFiAgent", "WIFI", "wifi"),
        AgentIdentity("agent-security", "SecurityAgent", "SECURITY", "security"),
        AgentIdentity("agent-health", "HealthAgent", "HEALTH", "health"),
        AgentIdentity("agent-wan", "WanAgent", "WAN", "wan"),
    )
}
assert {i.name for i in AGENTS.values()} == set(AGENT_DOMAINS)  # noqa: S101 - one list


def by_agent_name(name: str) -> AgentIdentity:
    """The identity of the agent called `name` (WiFiAgent...)."""
    for ident in AGENTS.values():
        if ident.name == name:
            return ident
    raise ConfigError(f"unknown agent {name!r}; expected one of {list(AGENT_DOMAINS)}")


def definition(spec: RuleSpec) -> dict[str, Any]:
    """What goes into `agent_rules.conditions`: the spec without its column fields."""
    data = spec.to_dict()
    for name in COLUMNS:
        data.pop(name, None)
    return data


@dataclass(frozen=True)
class RuleRow:
    """A row of `agent_rules`, as read."""

    id: int
    name: str
    type: str
    description: str | None
    conditions: Any
    is_active: bool

    def to_data(self, agent: str) -> dict[str, Any]:
        body = self.conditions
        if isinstance(body, list):  # seed 002: a bare list of conditions
            body = {"conditions": body, "severity": "warning", "finding_type": _camel(self.name)}
        if not isinstance(body, dict):
            body = {"conditions": body}
        return {
            **body,
            "name": self.name,
            "type": self.type,
            "description": self.description or self.name,
            "enabled": self.is_active,
            "agent": agent,
        }


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


async def register(engine: AsyncEngine, ident: AgentIdentity, pack: Sequence[RuleSpec]) -> int:
    """Create the agent's row if missing and load the shipped rules it never had; its id.

    A shipped rule is loaded once: a rule the operator later deleted is not brought back,
    and a rule added to the pack by an upgrade is loaded on the next start.
    """
    shipped = [spec for spec in pack if spec.agent == ident.name]
    async with engine.begin() as conn:
        await _ensure_agent(conn, ident)
        row = (
            await conn.execute(
                select(Agent.id, Agent.config).where(Agent.name == ident.name).with_for_update()
            )
        ).one()
        agent_id, config = int(row.id), dict(row.config or {})
        seen = set(config.get(PACK_SEEN, []))
        fresh = [spec for spec in shipped if spec.name not in seen]
        if fresh:
            await conn.execute(
                insert(AgentRule)
                .values([_rule_values(agent_id, spec) for spec in fresh])
                .on_conflict_do_nothing(index_elements=["agent_id", "name"])
            )
            config[PACK_SEEN] = sorted(seen | {spec.name for spec in fresh})
            await conn.execute(update(Agent).where(Agent.id == agent_id).values(config=config))
            log.info("rule pack loaded", agent=ident.name, rules=len(fresh))
    return agent_id


async def _ensure_agent(conn: AsyncConnection, ident: AgentIdentity) -> None:
    """The agent's row, created INACTIVE if missing (concurrent starts are fine)."""
    await conn.execute(
        insert(Agent)
        .values(
            name=ident.name,
            type=ident.type,
            description=ident.description,
            config={},
            status="INACTIVE",
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )


def _rule_values(agent_id: int, spec: RuleSpec) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "name": spec.name,
        "description": spec.description,
        "rule_type": spec.type,
        "conditions": definition(spec),
        "priority": 0,
        "is_active": spec.enabled,
    }


async def rule_rows(engine: AsyncEngine, agent_id: int) -> list[RuleRow]:
    """The agent's rule rows, by id."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                AgentRule.id,
                AgentRule.name,
                AgentRule.rule_type,
                AgentRule.description,
                AgentRule.conditions,
                AgentRule.is_active,
            )
            .where(AgentRule.agent_id == agent_id)
            .order_by(AgentRule.priority.desc(), AgentRule.id)
        )
        return [
            RuleRow(r.id, r.name, r.rule_type, r.description, r.conditions, r.is_active)
            for r in rows
        ]


def specs_of(rows: Iterable[RuleRow], agent: str) -> tuple[list[RuleSpec], dict[str, str]]:
    """The checked specs of rows, and the error of each row that is not a valid rule."""
    specs: list[RuleSpec] = []
    errors: dict[str, str] = {}
    for row in rows:
        try:
            specs.append(check_rule_data(row.to_data(agent), source=f"agent_rules #{row.id}"))
        except RulePackError as exc:
            errors[row.name] = "; ".join(str(e) for e in exc.errors)
    return specs, errors


async def rules_version(engine: AsyncEngine, agent_id: int) -> tuple[int, int, datetime | None]:
    """(rows, largest id, last update) of the agent's rules: changes when any rule does."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    func.count(AgentRule.id),
                    func.coalesce(func.max(AgentRule.id), 0),
                    func.max(AgentRule.updated_at),
                ).where(AgentRule.agent_id == agent_id)
            )
        ).one()
    return int(row[0]), int(row[1]), row[2]


async def set_status(engine: AsyncEngine, agent_id: int, status: str) -> None:
    """Record a heartbeat: the agent's status and `last_heartbeat = now()`."""
    async with engine.begin() as conn:
        await conn.execute(
            update(Agent)
            .where(Agent.id == agent_id)
            .values(status=status, last_heartbeat=func.now())
        )


async def agent_config(engine: AsyncEngine, agent_id: int) -> dict[str, Any]:
    """The agent's stored configuration (`agents.config`)."""
    async with engine.connect() as conn:
        value = await conn.scalar(select(Agent.config).where(Agent.id == agent_id))
    return dict(value or {})


async def merge_config(engine: AsyncEngine, agent_id: int, patch: dict[str, Any]) -> None:
    """Store configuration keys pushed to the agent (a JSON merge into `agents.config`)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(Agent).where(Agent.id == agent_id).values(config=Agent.config.op("||")(patch))
        )


async def save_rules(engine: AsyncEngine, specs: Sequence[RuleSpec]) -> int:
    """Insert or replace rules (already checked) under their agents; returns rows written.

    Creates an agent's row if it does not exist yet, so rules can be saved before the
    agent's first start.
    """
    written = 0
    async with engine.begin() as conn:
        for spec in specs:
            ident = by_agent_name(spec.agent or "")
            await _ensure_agent(conn, ident)
            agent_id = await conn.scalar(select(Agent.id).where(Agent.name == ident.name))
            values = _rule_values(int(agent_id or 0), spec)
            statement = insert(AgentRule).values(values)
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["agent_id", "name"],
                    set_={
                        "description": statement.excluded.description,
                        "rule_type": statement.excluded.rule_type,
                        "conditions": statement.excluded.conditions,
                        "is_active": statement.excluded.is_active,
                    },
                )
            )
            written += 1
    return written


async def load_state(engine: AsyncEngine, agent_id: int) -> dict[str, dict[str, Any]]:
    """What the agent's rules learned, by rule name."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AgentState.rule_name, AgentState.state).where(AgentState.agent_id == agent_id)
        )
        return {row.rule_name: dict(row.state) for row in rows}


async def save_state(engine: AsyncEngine, agent_id: int, states: dict[str, dict[str, Any]]) -> None:
    """Store what the agent's rules learned (one row per rule, replaced)."""
    if not states:
        return
    async with engine.begin() as conn:
        statement = insert(AgentState).values(
            [{"agent_id": agent_id, "rule_name": n, "state": s} for n, s in states.items()]
        )
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["agent_id", "rule_name"], set_={"state": statement.excluded.state}
            )
        )
