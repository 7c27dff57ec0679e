"""reporting: when each dirty day was first marked, so a summary may skip a refresh that is recent enough.

Revision ID: reporting_0006
Revises: reporting_0005
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0006"
down_revision = "reporting_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``rollup_dirty.marked_at`` (existing marks count as made now).

    A fresh database already has it: 0002 creates the projection tables from today's metadata.
    """
    op.execute(
        "ALTER TABLE reporting.rollup_dirty "
        "ADD COLUMN IF NOT EXISTS marked_at timestamptz NOT NULL DEFAULT now()"
    )


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("rollup_dirty", "marked_at", schema="reporting")
