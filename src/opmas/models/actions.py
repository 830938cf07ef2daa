"""Playbooks, their ordered steps, and the actions the orchestrator intends to carry out."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opmas.models.base import Base, Timestamps, one_of

if TYPE_CHECKING:
    from opmas.models.findings import Finding

EXECUTION_MODES = ("manual", "auto")
ACTION_STATUSES = (
    "pending",
    "approved",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "rejected",
    "expired",
    "interrupted",  # its executor stopped while it ran: it may or may not have run
)


class Playbook(Timestamps, Base):
    """A named remedy: when its trigger matches a finding, its steps become intended actions."""

    __tablename__ = "playbooks"
    __table_args__ = (CheckConstraint(one_of("execution_mode", EXECUTION_MODES), name="mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    trigger_type: Mapped[str] = mapped_column(String(50))
    trigger_conditions: Mapped[Any | None] = mapped_column(JSONB)
    execution_mode: Mapped[str] = mapped_column(String(20), server_default="manual")
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    auto_min_trust: Mapped[str | None] = mapped_column(Text)  # auto only from this trust up

    steps: Mapped[list[PlaybookStep]] = relationship(
        back_populates="playbook",
        lazy="raise",
        passive_deletes=True,
        order_by="PlaybookStep.step_number",
    )


class PlaybookStep(Timestamps, Base):
    """One step of a playbook; step numbers are unique within the playbook."""

    __tablename__ = "playbook_steps"
    __table_args__ = (
        UniqueConstraint("playbook_id", "step_number"),
        CheckConstraint("timeout_seconds > 0 AND retry_count >= 0", name="limits"),
        Index("idx_playbook_steps_playbook_id", "playbook_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    playbook_id: Mapped[int] = mapped_column(ForeignKey("playbooks.id", ondelete="CASCADE"))
    step_number: Mapped[int]
    action_type: Mapped[str] = mapped_column(String(50))
    action_config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    timeout_seconds: Mapped[int] = mapped_column(server_default=text("30"))
    retry_count: Mapped[int] = mapped_column(server_default=text("0"))
    execution_mode: Mapped[str | None] = mapped_column(String(20))  # None: the playbook's
    auto_min_trust: Mapped[str | None] = mapped_column(Text)  # None: the playbook's
    description: Mapped[str | None] = mapped_column(Text)

    playbook: Mapped[Playbook] = relationship(back_populates="steps", lazy="raise")


class IntendedAction(Timestamps, Base):
    """An action proposed for a finding; deleted with its finding.

    The finding is referenced by its whole primary key (finding_id, finding_created_at),
    which PostgreSQL requires for a foreign key to a partitioned table.
    """

    __tablename__ = "intended_actions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["finding_id", "finding_created_at"],
            ["findings.id", "findings.created_at"],
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        CheckConstraint(one_of("status", ACTION_STATUSES), name="status"),
        CheckConstraint(
            "(finding_id IS NULL) = (finding_created_at IS NULL)", name="finding_key_complete"
        ),
        Index("idx_intended_actions_status", "status"),
        Index("idx_intended_actions_finding_id", "finding_id", "finding_created_at"),
        Index("idx_intended_actions_playbook_id", "playbook_id"),
        Index("idx_intended_actions_device_id", "device_id"),
        Index("idx_intended_actions_incident_id", "incident_id"),
        Index("idx_intended_actions_lifts_action_id", "lifts_action_id"),
        CheckConstraint(one_of("execution_mode", EXECUTION_MODES), name="mode"),
        CheckConstraint(
            "timeout_seconds > 0 AND retry_count >= 0 AND attempts >= 0", name="limits"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    action_uuid: Mapped[uuid.UUID] = mapped_column(
        Uuid, unique=True, server_default=func.gen_random_uuid()
    )
    finding_id: Mapped[int | None] = mapped_column(BigInteger)
    finding_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    playbook_id: Mapped[int | None] = mapped_column(ForeignKey("playbooks.id", ondelete="SET NULL"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    action_type: Mapped[str] = mapped_column(String(50))
    action_config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    executed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    step_number: Mapped[int | None]
    execution_mode: Mapped[str] = mapped_column(String(20), server_default="manual")
    description: Mapped[str | None] = mapped_column(Text)
    timeout_seconds: Mapped[int] = mapped_column(server_default=text("30"))
    retry_count: Mapped[int] = mapped_column(server_default=text("0"))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(150))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    executor_id: Mapped[str | None] = mapped_column(String(200))  # who claimed the last run
    heartbeat_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True)
    )  # its executor's last sign of life while it runs
    lifts_action_id: Mapped[int | None] = mapped_column(
        ForeignKey("intended_actions.id", ondelete="SET NULL")
    )  # an unblock: the block (or ban) it lifts, see `opmas decisions delete`
    evidence_trust: Mapped[str | None] = mapped_column(Text)  # weakest trust of its evidence
    history: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )  # every transition: {"state", "at", "by", "attempt", "note"}

    finding: Mapped[Finding | None] = relationship(lazy="raise")
    playbook: Mapped[Playbook | None] = relationship(lazy="raise")


ALLOWLIST_KINDS = ("ip", "network", "mac", "device")


class AllowlistEntry(Timestamps, Base):
    """An IP, network (CIDR), MAC or device hostname that no action may ever target."""

    __tablename__ = "action_allowlist"
    __table_args__ = (
        CheckConstraint(one_of("kind", ALLOWLIST_KINDS), name="kind"),
        UniqueConstraint("kind", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    value: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)
