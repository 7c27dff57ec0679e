"""reporting: hazards unlinked from a closed original, and the index of returns after receipt (#21).

Revision ID: reporting_0009
Revises: reporting_0008
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0009"
down_revision = "reporting_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and the partial index (a fresh database has them already: 0002 uses today's tables).

    No recompute: before this revision no report was ever unlinked, and no dispatch could be
    returned after its receipt.
    """
    op.execute("ALTER TABLE reporting.hazards ADD COLUMN IF NOT EXISTS unlinked boolean")
    op.execute(
        "CREATE INDEX IF NOT EXISTS dispatches_returned_after_receipt "
        "ON reporting.dispatches (dispatch_day, department_id) "
        "WHERE acknowledged_at IS NOT NULL AND returned_at IS NOT NULL"
    )


def downgrade() -> None:
    """Drop them."""
    op.execute("DROP INDEX IF EXISTS reporting.dispatches_returned_after_receipt")
    op.execute("ALTER TABLE reporting.hazards DROP COLUMN IF EXISTS unlinked")
