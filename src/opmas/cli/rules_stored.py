"""The rules the agents run (`agent_rules`), compared with the shipped pack, for `opmas rules
list|show|enable|disable|export`; and the YAML that `opmas rules apply` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.agents.pack import RulePackError, RuleSpec, check_rule_data, load_pack
from opmas.agents.registry import PACK_SEEN, RuleRow
from opmas.errors import OpmasError
from opmas.models import Agent, AgentRule

SAME = "same as pack"
NOT_IN_PACK = "not in pack"
NOT_LOADED = "not loaded yet"  # the agent has not started since the rule was shipped
DELETED = "deleted"  # shipped, loaded once, then removed from agent_rules


@dataclass
class StoredRule:
    """One rule as the agents run it (or a shipped rule with no row), and how it differs
    from the pack."""

    name: str
    agent: str
    data: dict[str, Any]  # the rule as plain data (what `rules apply` reads)
    in_db: bool
    marker: str  # SAME, NOT_IN_PACK, NOT_LOADED, DELETED, or what changed
    edited: list[str] = field(default_factory=list)  # fields that differ from the pack
    error: str | None = None  # the row is not a valid rule (the agent keeps its last good one)
    spec: RuleSpec | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.data.get("enabled", True))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.data,
            "stored": self.in_db,
            "marker": self.marker,
            "edited_fields": self.edited,
            "error": self.error,
        }


def compare(spec: RuleSpec, shipped: RuleSpec | None) -> tuple[list[str], str]:
    """(fields that differ, marker) of a stored rule against the shipped one of its name."""
    if shipped is None:
        return [], NOT_IN_PACK
    mine, theirs = spec.to_dict(), shipped.to_dict()
    edited = sorted(
        key
        for key in set(mine) | set(theirs)
        if key != "enabled" and mine.get(key) != theirs.get(key)
    )
    parts = [f"edited: {', '.join(edited)}"] if edited else []
    if spec.enabled != shipped.enabled:
        parts.append("disabled" if not spec.enabled else "enabled (off in pack)")
    return edited, "; ".join(parts) or SAME


async def stored_rules(session: AsyncSession) -> list[StoredRule]:
    """Every row of `agent_rules`, then every shipped rule without a row, by agent and name."""
    pack = {(spec.agent, spec.name): spec for spec in load_pack()}
    rows = await session.execute(
        select(AgentRule, Agent.name).join(Agent, Agent.id == AgentRule.agent_id)
    )
    seen = {
        name: set((config or {}).get(PACK_SEEN, []))
        for name, config in await session.execute(select(Agent.name, Agent.config))
    }
    found: list[StoredRule] = []
    for rule, agent in rows:
        row = RuleRow(
            rule.id, rule.name, rule.rule_type, rule.description, rule.conditions, rule.is_active
        )
        data = row.to_data(agent)
        shipped = pack.pop((agent, rule.name), None)
        try:
            spec = check_rule_data(data, source=f"agent_rules #{rule.id}")
        except RulePackError as exc:
            error = "; ".join(str(e) for e in exc.errors)
            found.append(StoredRule(rule.name, agent, data, True, "invalid", error=error))
            continue
        edited, marker = compare(spec, shipped)
        found.append(StoredRule(rule.name, agent, spec.to_dict(), True, marker, edited, spec=spec))
    for (owner, name), spec in pack.items():
        marker = DELETED if name in seen.get(owner or "", set()) else NOT_LOADED
        found.append(StoredRule(name, owner or "", spec.to_dict(), False, marker, spec=spec))
    return sorted(found, key=lambda r: (r.agent, r.name))


def pick(rules: list[StoredRule], name: str, agent: str | None) -> StoredRule:
    """The rule called `name` (of `agent`, if given).

    Raises:
        OpmasError: none, or several agents have one of that name and `agent` is not given.
    """
    matches = [r for r in rules if r.name == name and agent in (None, r.agent)]
    if not matches:
        raise OpmasError(f"no rule named {name}")
    if len(matches) > 1:
        agents = ", ".join(r.agent for r in matches)
        raise OpmasError(f"several agents have a rule {name} ({agents}): give --agent")
    return matches[0]


async def set_enabled(session: AsyncSession, rule: StoredRule, enabled: bool) -> bool:
    """Enable or disable a stored rule (flush only); False when it already was."""
    if rule.enabled == enabled:
        return False
    agent_id = select(Agent.id).where(Agent.name == rule.agent).scalar_subquery()
    await session.execute(
        update(AgentRule)
        .where(AgentRule.agent_id == agent_id, AgentRule.name == rule.name)
        .values(is_active=enabled)
    )
    return True


def export_yaml(rules: list[RuleSpec], now: datetime | None = None) -> str:
    """A rule file in the format `opmas rules apply` reads: applying it changes nothing."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    header = (
        f"# {len(rules)} rule(s) exported from agent_rules at {stamp}.\n"
        "# Edit, then `opmas rules apply FILE`; the format is in docs/rules.md.\n"
    )
    body = yaml.safe_dump(
        {"rules": [spec.to_dict() for spec in rules]},
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return header + body
