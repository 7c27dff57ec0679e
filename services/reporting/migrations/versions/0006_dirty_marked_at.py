"""reporting: dirty days carry when they were first marked (a summary may skip a recent-enough refresh) and a version (a refresh no longer blocks consumers).

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
    """Add ``rollup_dirty.marked_at`` (existing marks count as made now) and ``version``.

    A fresh database already has it: 0002 creates the projection tables from today's metadata.
    """
    op.execute(
        "ALTER TABLE reporting.rollup_dirty "
        "ADD COLUMN IF NOT EXISTS marked_at timestamptz NOT NULL DEFAULT now(), "
        "ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0"
    )


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("rollup_dirty", "version", schema="reporting")
    op.drop_column("rollup_dirty", "marked_at", schema="reporting")
