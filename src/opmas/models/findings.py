"""Findings raised by the agents and the incidents the orchestrator groups them into.

`findings` is partitioned by month on `created_at`; `finding_ids` keeps `finding_uuid` unique
across partitions (a trigger fills it), so redelivered findings are refused, never doubled.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opmas.models.base import (
    DOMAINS,
    FINDING_STATUSES,
    SEVERITIES,
    Base,
    Timestamps,
    one_of,
)

if TYPE_CHECKING:
    from opmas.models.core import Device
    from opmas.models.detection import Agent


class Finding(Timestamps, Base):
    """One agent finding; the primary key is (id, created_at), the partition key included.

    Writers may set `created_at` to the finding's own time so that a redelivery hits
    `ON CONFLICT (finding_uuid, created_at)`; any other duplicate uuid raises a unique violation.
    """

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("finding_uuid", "created_at"),
        CheckConstraint(one_of("severity", SEVERITIES), name="severity"),
        CheckConstraint(one_of("status", FINDING_STATUSES), name="status"),
        CheckConstraint(one_of("domain", DOMAINS), name="domain"),
        CheckConstraint("count >= 1", name="count_positive"),
        Index("idx_findings_device_id", "device_id"),
        Index("idx_findings_created_at", "created_at"),
        Index("idx_findings_status_created_at", "status", "created_at"),
        Index("idx_findings_device_hostname_created_at", "device_hostname", "created_at"),
        Index("idx_findings_agent_id", "agent_id"),
        Index("idx_findings_rule_id", "rule_id"),
        Index("idx_findings_incident_id", "incident_id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    finding_uuid: Mapped[uuid.UUID] = mapped_column(Uuid)
    domain: Mapped[str | None] = mapped_column(String(20))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    agent_name: Mapped[str | None] = mapped_column(String(255))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("agent_rules.id", ondelete="SET NULL"))
    rule_name: Mapped[str | None] = mapped_column(String(255))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    device_hostname: Mapped[str | None] = mapped_column(String(255))
    device_ip: Mapped[str | None] = mapped_column(INET)
    finding_type: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(20))
    description: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), server_default="new")
    evidence_event_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(Uuid), server_default=text("'{}'")
    )
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    finding_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(server_default=text("1"))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    assignee: Mapped[str | None] = mapped_column(String(150))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    agent: Mapped[Agent | None] = relationship(lazy="raise")
    device: Mapped[Device | None] = relationship(back_populates="findings", lazy="raise")
    incident: Mapped[Incident | None] = relationship(back_populates="findings", lazy="raise")


class FindingId(Base):
    """Registry of every `finding_uuid` with the `created_at` of its row (filled by trigger)."""

    __tablename__ = "finding_ids"

    finding_uuid: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Incident(Timestamps, Base):
    """Correlated findings handled as one problem: new -> acknowledged -> resolved."""

    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint(one_of("severity", SEVERITIES), name="severity"),
        CheckConstraint(one_of("status", FINDING_STATUSES), name="status"),
        Index("idx_incidents_status", "status"),
        Index("idx_incidents_device_id", "device_id"),
        Index("idx_incidents_correlation_key_last_seen_at", "correlation_key", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_uuid: Mapped[uuid.UUID] = mapped_column(
        Uuid, unique=True, server_default=func.gen_random_uuid()
    )
    title: Mapped[str] = mapped_column(String(255))
    incident_type: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), server_default="new")
    description: Mapped[str | None] = mapped_column(Text)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    assignee: Mapped[str | None] = mapped_column(String(150))
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_key: Mapped[str] = mapped_column(String(255), server_default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    finding_count: Mapped[int] = mapped_column(server_default=text("0"))

    findings: Mapped[list[Finding]] = relationship(
        back_populates="incident", lazy="raise", passive_deletes=True
    )
    comments: Mapped[list[IncidentComment]] = relationship(
        back_populates="incident", lazy="raise", passive_deletes=True
    )


class IncidentComment(Timestamps, Base):
    """A remark on an incident by a user; deleted with its incident."""

    __tablename__ = "incident_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    author: Mapped[str] = mapped_column(String(150))
    body: Mapped[str] = mapped_column(Text)

    incident: Mapped[Incident] = relationship(back_populates="comments", lazy="raise")
