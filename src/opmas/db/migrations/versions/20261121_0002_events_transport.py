"""events.transport: how each line reached OPMAS (udp, tcp, tls, http, file, replay).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE events ADD COLUMN transport varchar(10) CONSTRAINT ck_events_transport"
        " CHECK (transport IN ('udp', 'tcp', 'tls', 'http', 'file', 'replay'))"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE events DROP COLUMN transport")
