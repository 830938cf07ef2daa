"""Parsed log events, written by the event store in batches (COPY).

`events` is partitioned by day on `arrival_ts_utc`; retention drops whole partitions.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, String, Text, Uuid, func, text
from sqlalchemy.dialects.postgresql import ARRAY, INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from opmas.models.base import DOMAINS, Base, one_of

EVENT_TYPES = ("LOG", "NETWORK", "AUTH", "FILE", "PROCESS", "REGISTRY", "CUSTOM")
EVENT_FLAGS = ("truncated", "invalid_utf8", "nul_replaced", "invalid_pri", "parse_error")
TRANSPORTS = ("udp", "tcp", "tls", "http", "file", "replay")


class Event(Base):
    """One parsed log line; (event_id, arrival_ts_utc) is the key, the partition key included.

    `device_id` has no foreign key, so that COPY into this table never waits on `devices`.
    `flags` holds values of EVENT_FLAGS.
    """

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(one_of("event_type", EVENT_TYPES), name="event_type"),
        CheckConstraint(one_of("log_source_type", DOMAINS), name="log_source_type"),
        CheckConstraint(one_of("transport", TRANSPORTS), name="transport"),
        Index("idx_events_hostname_arrival_ts_utc", "hostname", "arrival_ts_utc"),
        {"postgresql_partition_by": "RANGE (arrival_ts_utc)"},
    )

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    arrival_ts_utc: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    source_ip: Mapped[str | None] = mapped_column(INET)
    original_ts: Mapped[str | None] = mapped_column(Text)
    event_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hostname: Mapped[str | None] = mapped_column(String(255))
    process_name: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[str | None] = mapped_column(Text)
    log_level: Mapped[str | None] = mapped_column(String(20))
    facility: Mapped[str | None] = mapped_column(String(20))
    event_type: Mapped[str] = mapped_column(String(20), server_default="LOG")
    message: Mapped[str] = mapped_column(Text)
    parser_name: Mapped[str] = mapped_column(String(100), server_default="unparsed")
    log_source_type: Mapped[str] = mapped_column(String(20), server_default="other")
    structured_fields: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    device_id: Mapped[int | None]
    flags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    transport: Mapped[str | None] = mapped_column(String(10))
    trust: Mapped[str | None] = mapped_column(Text)  # opmas.trust level; NULL counts as untrusted
