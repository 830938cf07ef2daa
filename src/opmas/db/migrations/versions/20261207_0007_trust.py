"""Trust boundaries: devices are enrolled or discovered, events record how far their source is trusted.

`devices.enrolment` is 'enrolled' (added or confirmed by the operator) or 'discovered' (seen in
logs only); existing devices that have an SSH key or a pinned host key were set up by the operator
and become enrolled. `first_seen_from`/`seen_from` are the source addresses a discovered device
was first and last seen from. `events.trust` is 'verified', 'address' or 'untrusted'; NULL (events
stored before this revision) counts as untrusted. Adding the column to the partitioned parent adds
it to every partition. A playbook (or step) runs `auto` only when its finding's evidence is at
least `auto_min_trust` (NULL: 'address'); the shipped hostapd reload needs 'verified'. An action
records the trust of the evidence it rests on (`evidence_trust`, shown to its approver).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    "ALTER TABLE devices ADD COLUMN enrolment text NOT NULL DEFAULT 'discovered'"
    " CONSTRAINT ck_devices_enrolment CHECK (enrolment IN ('enrolled', 'discovered'))",
    "ALTER TABLE devices ADD COLUMN first_seen_from inet",
    "ALTER TABLE devices ADD COLUMN seen_from inet",
    "UPDATE devices SET enrolment = 'enrolled'"
    " WHERE ssh_host_key IS NOT NULL"
    " OR EXISTS (SELECT 1 FROM ssh_keys k WHERE k.device_id = devices.id)",
    "CREATE INDEX idx_devices_enrolment_last_seen_at ON devices (enrolment, last_seen_at)",
    "ALTER TABLE events ADD COLUMN trust text",
    "ALTER TABLE playbooks ADD COLUMN auto_min_trust text",
    "ALTER TABLE playbook_steps ADD COLUMN auto_min_trust text",
    "UPDATE playbooks SET auto_min_trust = 'verified'"
    " WHERE name = 'reload-wifi-after-hostapd-crash'",
    "ALTER TABLE intended_actions ADD COLUMN evidence_trust text",
]

DOWNGRADE = [
    "ALTER TABLE intended_actions DROP COLUMN evidence_trust",
    "ALTER TABLE playbook_steps DROP COLUMN auto_min_trust",
    "ALTER TABLE playbooks DROP COLUMN auto_min_trust",
    "ALTER TABLE events DROP COLUMN trust",
    "DROP INDEX idx_devices_enrolment_last_seen_at",
    "ALTER TABLE devices DROP COLUMN seen_from",
    "ALTER TABLE devices DROP COLUMN first_seen_from",
    "ALTER TABLE devices DROP COLUMN enrolment",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
