"""FLEET rules: `agent_rules.rule_type` also accepts 'FLEET' (rules counted across routers).

Downgrade deletes the FLEET rows, which the older check constraint would refuse.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "'PATTERN', 'THRESHOLD', 'CORRELATION', 'STATISTICAL', 'MACHINE_LEARNING'"
NEW = OLD + ", 'FLEET'"


def _constraint(types: str) -> list[str]:
    return [
        "ALTER TABLE agent_rules DROP CONSTRAINT ck_agent_rules_rule_type",
        "ALTER TABLE agent_rules ADD CONSTRAINT ck_agent_rules_rule_type"
        f" CHECK (rule_type IN ({types}))",
    ]


def upgrade() -> None:
    for statement in _constraint(NEW):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DELETE FROM agent_rules WHERE rule_type = 'FLEET'")
    for statement in _constraint(OLD):
        op.execute(statement)
