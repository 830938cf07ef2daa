"""Decisions can be lifted: an unblock action names the block (or ban) it lifts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    "ALTER TABLE intended_actions ADD COLUMN lifts_action_id integer"
    " CONSTRAINT fk_intended_actions_lifts_action_id_intended_actions"
    " REFERENCES intended_actions (id) ON DELETE SET NULL",
    "CREATE INDEX idx_intended_actions_lifts_action_id ON intended_actions (lifts_action_id)",
]

DOWNGRADE = [
    "DROP INDEX idx_intended_actions_lifts_action_id",
    "ALTER TABLE intended_actions DROP COLUMN lifts_action_id",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
