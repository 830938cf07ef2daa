"""agent_state: what an agent learned (log templates of a MACHINE_LEARNING rule) across restarts.

Windows are rebuilt by replaying the stream; learned templates cover far more history than
the stream keeps, so they are saved here, one row per agent and rule.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE agent_state (
    agent_id integer NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    rule_name varchar(255) NOT NULL,
    state jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_agent_state PRIMARY KEY (agent_id, rule_name)
)"""
    )
    op.execute(
        "CREATE TRIGGER trg_agent_state_updated_at BEFORE UPDATE ON agent_state"
        " FOR EACH ROW EXECUTE FUNCTION opmas_set_updated_at()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE agent_state")
