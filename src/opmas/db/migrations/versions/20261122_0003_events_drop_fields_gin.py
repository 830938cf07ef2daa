"""Drop the GIN index on events.structured_fields: it cost more than the rest of an insert.

At 20,000 events/s the jsonb_path_ops GIN index took a large share of PostgreSQL's CPU and
pushed arrival-to-stored latency past its target; nothing queries it yet. Queries on a field
get an expression index of their own when they arrive.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_events_structured_fields")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX idx_events_structured_fields ON events"
        " USING gin (structured_fields jsonb_path_ops)"
    )
