"""SQLAlchemy ORM classes of every OPMAS table; the Alembic migration owns the schema."""

from opmas.models.actions import AllowlistEntry, IntendedAction, Playbook, PlaybookStep
from opmas.models.auth import ApiToken, User
from opmas.models.base import Base
from opmas.models.core import Device, LogSource, OpmasConfig, SshKey
from opmas.models.detection import Agent, AgentRule, AgentState
from opmas.models.events import Event
from opmas.models.findings import Finding, FindingId, Incident, IncidentComment
from opmas.models.notify import (
    NotificationChannel,
    NotificationHistory,
    NotificationRule,
    notification_rule_channels,
)

__all__ = [
    "Agent",
    "AgentRule",
    "AgentState",
    "AllowlistEntry",
    "ApiToken",
    "Base",
    "Device",
    "Event",
    "Finding",
    "FindingId",
    "Incident",
    "IncidentComment",
    "IntendedAction",
    "LogSource",
    "NotificationChannel",
    "NotificationHistory",
    "NotificationRule",
    "OpmasConfig",
    "Playbook",
    "PlaybookStep",
    "SshKey",
    "User",
    "notification_rule_channels",
]
