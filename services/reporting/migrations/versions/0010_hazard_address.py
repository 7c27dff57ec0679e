"""reporting: hazards keep their address, so the dashboard's hotspot and overdue lists name the place.

Revision ID: reporting_0010
Revises: reporting_0009
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0010"
down_revision = "reporting_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``hazards.address`` (empty for hazards applied before; a rebuild fills it).

    A fresh database already has it: 0002 creates the projection tables from today's metadata.
    """
    op.execute("ALTER TABLE reporting.hazards ADD COLUMN IF NOT EXISTS address text")


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("hazards", "address", schema="reporting")
