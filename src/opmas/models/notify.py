"""Where the notifier sends alerts, which findings go where, and what it has sent."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opmas.models.base import SEVERITIES, Base, Timestamps, one_of

CHANNEL_TYPES = ("email", "slack", "webhook")
NOTIFICATION_STATUSES = ("sent", "failed", "pending")
SEVERITY_RANK = f"ARRAY[{', '.join(repr(s) for s in SEVERITIES)}]::text[]"

notification_rule_channels = Table(
    "notification_rule_channels",
    Base.metadata,
    Column(
        "rule_id",
        Integer,
        ForeignKey("notification_rules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "channel_id",
        Integer,
        ForeignKey("notification_channels.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class NotificationChannel(Timestamps, Base):
    """An email, Slack or webhook destination; its secret is stored encrypted."""

    __tablename__ = "notification_channels"
    __table_args__ = (CheckConstraint(one_of("channel_type", CHANNEL_TYPES), name="type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    channel_type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    encrypted_secret: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))


class NotificationRule(Timestamps, Base):
    """Sends findings within a severity range (and domains/categories, if set) to channels."""

    __tablename__ = "notification_rules"
    __table_args__ = (
        CheckConstraint(one_of("min_severity", SEVERITIES), name="min_severity"),
        CheckConstraint(one_of("max_severity", SEVERITIES), name="max_severity"),
        CheckConstraint(
            f"array_position({SEVERITY_RANK}, min_severity::text)"
            f" <= array_position({SEVERITY_RANK}, max_severity::text)",
            name="severity_range",
        ),
        CheckConstraint("digest_interval_s >= 0", name="digest_interval"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    min_severity: Mapped[str] = mapped_column(String(20), server_default="warning")
    max_severity: Mapped[str] = mapped_column(String(20), server_default="critical")
    domains: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    categories: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    digest_interval_s: Mapped[int] = mapped_column(server_default=text("0"))

    channels: Mapped[list[NotificationChannel]] = relationship(
        secondary=notification_rule_channels, lazy="raise", passive_deletes=True
    )


class NotificationHistory(Timestamps, Base):
    """One notification of a finding or incident on one channel, with its delivery state."""

    __tablename__ = "notification_history"
    __table_args__ = (
        CheckConstraint(one_of("status", NOTIFICATION_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("idx_notification_history_finding_uuid", "finding_uuid"),
        Index("idx_notification_history_status_created_at", "status", "created_at"),
        Index("idx_notification_history_incident_id", "incident_id"),
        Index("idx_notification_history_channel_id", "channel_id"),
        Index(
            "uq_notification_history_finding_uuid_channel_id",
            "finding_uuid",
            "channel_id",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    finding_uuid: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(255))
    notification_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    error_message: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_rules.id", ondelete="SET NULL")
    )
    action_id: Mapped[int | None] = mapped_column(
        ForeignKey("intended_actions.id", ondelete="SET NULL")
    )
    digest_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # what the message says
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
