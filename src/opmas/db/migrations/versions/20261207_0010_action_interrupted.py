"""Actions left running by a dead executor become `interrupted`: who runs an action
(`executor_id`) and its last sign of life (`heartbeat_at`) are recorded on the row.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "'pending', 'approved', 'running', 'succeeded', 'failed', 'timed_out', 'rejected', 'expired'"
)
NEW_STATUSES = f"{OLD_STATUSES}, 'interrupted'"

UPGRADE = [
    "ALTER TABLE intended_actions DROP CONSTRAINT ck_intended_actions_status",
    "ALTER TABLE intended_actions ADD CONSTRAINT ck_intended_actions_status"
    f" CHECK (status IN ({NEW_STATUSES}))",
    "ALTER TABLE intended_actions ADD COLUMN executor_id varchar(200)",
    "ALTER TABLE intended_actions ADD COLUMN heartbeat_at timestamptz",
]

DOWNGRADE = [
    # the old schema has no word for "may or may not have run": the closest is failed
    "UPDATE intended_actions SET status = 'failed' WHERE status = 'interrupted'",
    "ALTER TABLE intended_actions DROP CONSTRAINT ck_intended_actions_status",
    "ALTER TABLE intended_actions ADD CONSTRAINT ck_intended_actions_status"
    f" CHECK (status IN ({OLD_STATUSES}))",
    "ALTER TABLE intended_actions DROP COLUMN heartbeat_at, DROP COLUMN executor_id",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
