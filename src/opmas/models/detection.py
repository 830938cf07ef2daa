"""The domain agents and the detection rules each one evaluates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opmas.models.base import Base, Timestamps, one_of

AGENT_TYPES = ("WIFI", "SECURITY", "HEALTH", "WAN")
AGENT_STATUSES = ("ACTIVE", "INACTIVE", "ERROR", "MAINTENANCE")
RULE_TYPES = ("PATTERN", "THRESHOLD", "CORRELATION", "STATISTICAL", "MACHINE_LEARNING", "FLEET")


class Agent(Timestamps, Base):
    """A domain agent; `status` and `last_heartbeat` come from its heartbeats."""

    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint(one_of("type", AGENT_TYPES), name="type"),
        CheckConstraint(one_of("status", AGENT_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), server_default="INACTIVE")
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    rules: Mapped[list[AgentRule]] = relationship(
        back_populates="agent", lazy="raise", passive_deletes=True
    )


class AgentRule(Timestamps, Base):
    """One rule of an agent; names are unique within an agent, not across agents."""

    __tablename__ = "agent_rules"
    __table_args__ = (
        UniqueConstraint("agent_id", "name"),
        CheckConstraint(one_of("rule_type", RULE_TYPES), name="rule_type"),
        Index("idx_agent_rules_agent_id", "agent_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    rule_type: Mapped[str] = mapped_column(String(50))
    conditions: Mapped[Any] = mapped_column(JSONB)
    actions: Mapped[Any | None] = mapped_column(JSONB)
    priority: Mapped[int] = mapped_column(server_default=text("0"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))

    agent: Mapped[Agent] = relationship(back_populates="rules", lazy="raise")


class AgentState(Timestamps, Base):
    """What an agent's rule learned (e.g. log templates), kept across restarts."""

    __tablename__ = "agent_state"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    rule_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB)
