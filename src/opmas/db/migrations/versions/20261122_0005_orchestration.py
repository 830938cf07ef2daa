"""Orchestration: incidents keyed for correlation, actions with retries and expiry, SSH host
key pinning per device, an allowlist actions never target, notification digests.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    # devices: how to reach the router over SSH, and its pinned host key (trust on first use)
    "ALTER TABLE devices ADD COLUMN ssh_port integer NOT NULL DEFAULT 22",
    "ALTER TABLE devices ADD COLUMN ssh_user varchar(64) NOT NULL DEFAULT 'root'",
    "ALTER TABLE devices ADD COLUMN ssh_host_key text",
    "ALTER TABLE devices ADD COLUMN ssh_host_key_pinned_at timestamptz",
    "ALTER TABLE devices ADD CONSTRAINT ck_devices_ssh_port CHECK (ssh_port BETWEEN 1 AND 65535)",
    # findings: the latest event time of a burst
    "ALTER TABLE findings ADD COLUMN last_seen_at timestamptz",
    # incidents: what groups findings (device:<host>, attacker:<ip>) and what they hold
    "ALTER TABLE incidents ADD COLUMN correlation_key varchar(255) NOT NULL DEFAULT ''",
    "ALTER TABLE incidents ADD COLUMN details jsonb NOT NULL DEFAULT '{}'::jsonb",
    "ALTER TABLE incidents ADD COLUMN finding_count integer NOT NULL DEFAULT 0",
    "CREATE INDEX idx_incidents_correlation_key_last_seen_at"
    " ON incidents (correlation_key, last_seen_at)",
    # playbook steps may override the playbook's execution mode
    "ALTER TABLE playbook_steps ADD COLUMN execution_mode varchar(20)",
    "ALTER TABLE playbook_steps ADD CONSTRAINT ck_playbook_steps_mode"
    " CHECK (execution_mode IS NULL OR execution_mode IN ('manual', 'auto'))",
    "ALTER TABLE playbook_steps ADD COLUMN description text",
    # intended actions: where they came from, how they run, who decided
    "ALTER TABLE intended_actions ADD COLUMN incident_id integer"
    " CONSTRAINT fk_intended_actions_incident_id_incidents REFERENCES incidents (id) ON DELETE SET NULL",
    "ALTER TABLE intended_actions ADD COLUMN dedupe_key varchar(255)",
    "ALTER TABLE intended_actions ADD CONSTRAINT uq_intended_actions_dedupe_key"
    " UNIQUE (dedupe_key)",
    "ALTER TABLE intended_actions ADD COLUMN step_number integer",
    "ALTER TABLE intended_actions ADD COLUMN execution_mode varchar(20) NOT NULL DEFAULT 'manual'",
    "ALTER TABLE intended_actions ADD CONSTRAINT ck_intended_actions_mode"
    " CHECK (execution_mode IN ('manual', 'auto'))",
    "ALTER TABLE intended_actions ADD COLUMN description text",
    "ALTER TABLE intended_actions ADD COLUMN timeout_seconds integer NOT NULL DEFAULT 30",
    "ALTER TABLE intended_actions ADD COLUMN retry_count integer NOT NULL DEFAULT 0",
    "ALTER TABLE intended_actions ADD COLUMN attempts integer NOT NULL DEFAULT 0",
    "ALTER TABLE intended_actions ADD CONSTRAINT ck_intended_actions_limits"
    " CHECK (timeout_seconds > 0 AND retry_count >= 0 AND attempts >= 0)",
    "ALTER TABLE intended_actions ADD COLUMN expires_at timestamptz",
    "ALTER TABLE intended_actions ADD COLUMN decided_by varchar(150)",
    "ALTER TABLE intended_actions ADD COLUMN decided_at timestamptz",
    "ALTER TABLE intended_actions ADD COLUMN started_at timestamptz",
    "ALTER TABLE intended_actions ADD COLUMN finished_at timestamptz",
    "ALTER TABLE intended_actions ADD COLUMN history jsonb NOT NULL DEFAULT '[]'::jsonb",
    "CREATE INDEX idx_intended_actions_incident_id ON intended_actions (incident_id)",
    # addresses, networks, MACs and devices no action may target
    """CREATE TABLE action_allowlist (
    id serial CONSTRAINT pk_action_allowlist PRIMARY KEY,
    kind varchar(20) NOT NULL,
    value varchar(255) NOT NULL,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_action_allowlist_kind CHECK (kind IN ('ip', 'network', 'mac', 'device')),
    CONSTRAINT uq_action_allowlist_kind_value UNIQUE (kind, value)
)""",
    "CREATE TRIGGER trg_action_allowlist_updated_at BEFORE UPDATE ON action_allowlist"
    " FOR EACH ROW EXECUTE FUNCTION opmas_set_updated_at()",
    # notification history: one row per finding and channel; a digest groups rows
    "ALTER TABLE notification_history ADD COLUMN rule_id integer"
    " CONSTRAINT fk_notification_history_rule_id_notification_rules REFERENCES notification_rules (id) ON DELETE SET NULL",
    "ALTER TABLE notification_history ADD COLUMN action_id integer"
    " CONSTRAINT fk_notification_history_action_id_intended_actions REFERENCES intended_actions (id) ON DELETE SET NULL",
    "ALTER TABLE notification_history ADD COLUMN digest_id uuid",
    "ALTER TABLE notification_history ADD COLUMN payload jsonb",
    "ALTER TABLE notification_history ADD COLUMN next_attempt_at timestamptz",
    "CREATE UNIQUE INDEX uq_notification_history_finding_uuid_channel_id"
    " ON notification_history (finding_uuid, channel_id)",
    "CREATE INDEX idx_notification_history_digest_id ON notification_history (digest_id)",
]

DOWNGRADE = [
    "DROP INDEX idx_notification_history_digest_id",
    "DROP INDEX uq_notification_history_finding_uuid_channel_id",
    "ALTER TABLE notification_history DROP COLUMN next_attempt_at, DROP COLUMN payload,"
    " DROP COLUMN digest_id, DROP COLUMN action_id, DROP COLUMN rule_id",
    "DROP TABLE action_allowlist",
    "ALTER TABLE intended_actions DROP COLUMN history, DROP COLUMN finished_at,"
    " DROP COLUMN started_at, DROP COLUMN decided_at, DROP COLUMN decided_by,"
    " DROP COLUMN expires_at, DROP CONSTRAINT ck_intended_actions_limits,"
    " DROP COLUMN attempts, DROP COLUMN retry_count, DROP COLUMN timeout_seconds,"
    " DROP COLUMN description, DROP CONSTRAINT ck_intended_actions_mode,"
    " DROP COLUMN execution_mode, DROP COLUMN step_number,"
    " DROP CONSTRAINT uq_intended_actions_dedupe_key, DROP COLUMN dedupe_key,"
    " DROP COLUMN incident_id",
    "ALTER TABLE playbook_steps DROP COLUMN description,"
    " DROP CONSTRAINT ck_playbook_steps_mode, DROP COLUMN execution_mode",
    "DROP INDEX idx_incidents_correlation_key_last_seen_at",
    "ALTER TABLE incidents DROP COLUMN finding_count, DROP COLUMN details,"
    " DROP COLUMN correlation_key",
    "ALTER TABLE findings DROP COLUMN last_seen_at",
    "ALTER TABLE devices DROP CONSTRAINT ck_devices_ssh_port,"
    " DROP COLUMN ssh_host_key_pinned_at, DROP COLUMN ssh_host_key,"
    " DROP COLUMN ssh_user, DROP COLUMN ssh_port",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
