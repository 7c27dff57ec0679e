"""reporting: urgings and deadline extensions (``actions``), and the original receipt deadline (#16).

Revision ID: reporting_0011
Revises: reporting_0010
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0011"
down_revision = "reporting_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``dispatches.original_deadline`` and the ``actions`` table (a fresh database has both: 0002)."""
    op.execute("ALTER TABLE reporting.dispatches ADD COLUMN IF NOT EXISTS original_deadline timestamptz")
    op.execute(
        "CREATE INDEX IF NOT EXISTS dispatches_extended ON reporting.dispatches (dispatch_day) "
        "WHERE original_deadline < deadline"
    )
    op.execute(
        "CREATE TABLE IF NOT EXISTS reporting.actions ("
        "event_id uuid PRIMARY KEY, kind text, hazard_id uuid, department_id text, stage text, "
        "action_at timestamptz, action_day date)"
    )
    op.execute("CREATE INDEX IF NOT EXISTS actions_day ON reporting.actions (action_day, kind)")


def downgrade() -> None:
    """Drop them."""
    op.execute("DROP TABLE IF EXISTS reporting.actions")
    op.execute("DROP INDEX IF EXISTS reporting.dispatches_extended")
    op.drop_column("dispatches", "original_deadline", schema="reporting")
