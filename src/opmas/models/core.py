"""System configuration, the routers OPMAS watches, their SSH keys and the log files it tails."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opmas.models.base import Base, Timestamps, one_of

if TYPE_CHECKING:
    from opmas.models.findings import Finding

DEVICE_STATUSES = ("active", "inactive", "maintenance", "decommissioned")
ENROLLED = "enrolled"  # added or confirmed by the operator: may get SSH actions
DISCOVERED = "discovered"  # seen in logs only: never acted on over SSH
ENROLMENTS = (ENROLLED, DISCOVERED)


class OpmasConfig(Timestamps, Base):
    """One system-wide setting, stored as JSON under a unique key."""

    __tablename__ = "opmas_config"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    value: Mapped[Any] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(Text)


class Device(Timestamps, Base):
    """An OpenWRT router; hostname and IP address are each unique."""

    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint(one_of("status", DEVICE_STATUSES), name="status"),
        CheckConstraint(one_of("enrolment", ENROLMENTS), name="enrolment"),
        Index("idx_devices_status", "status"),
        Index("idx_devices_enrolment_last_seen_at", "enrolment", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    ip_address: Mapped[str] = mapped_column(INET, unique=True)
    model: Mapped[str | None] = mapped_column(String(255))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), server_default="active")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    ssh_port: Mapped[int] = mapped_column(server_default=text("22"))
    ssh_user: Mapped[str] = mapped_column(String(64), server_default="root")
    ssh_host_key: Mapped[str | None] = mapped_column(Text)  # pinned on first use
    ssh_host_key_pinned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enrolment: Mapped[str] = mapped_column(Text, server_default=DISCOVERED)
    first_seen_from: Mapped[str | None] = mapped_column(INET)  # source address, discovery
    seen_from: Mapped[str | None] = mapped_column(INET)  # source address of the latest line

    ssh_keys: Mapped[list[SshKey]] = relationship(
        back_populates="device", lazy="raise", passive_deletes=True
    )
    findings: Mapped[list[Finding]] = relationship(
        back_populates="device", lazy="raise", passive_deletes=True
    )


class SshKey(Timestamps, Base):
    """A private key for one device, encrypted with the secret key; never sent by the API."""

    __tablename__ = "ssh_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    key_type: Mapped[str] = mapped_column(String(20))
    encrypted_key: Mapped[str] = mapped_column(Text)
    key_fingerprint: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))

    device: Mapped[Device] = relationship(back_populates="ssh_keys", lazy="raise")


class LogSource(Timestamps, Base):
    """A log file or directory the file monitor tails, with the offset it has read to."""

    __tablename__ = "log_sources"
    __table_args__ = (
        CheckConstraint("polling_interval > 0", name="polling_interval_positive"),
        CheckConstraint("file_size >= 0 AND last_offset >= 0", name="offsets_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    source_name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    polling_interval: Mapped[float] = mapped_column(Double, server_default=text("1.0"))
    file_pattern: Mapped[str | None] = mapped_column(Text)
    recursive: Mapped[bool] = mapped_column(server_default=text("false"))
    last_monitored: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    file_size: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_offset: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    inode: Mapped[int | None] = mapped_column(BigInteger)
