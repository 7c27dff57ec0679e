"""tracking: indexes of the case lists the people's pages read, by grid and by holding department (#17).

Revision ID: tracking_0006
Revises: tracking_0003
"""

from __future__ import annotations

from alembic import op

revision = "tracking_0006"
down_revision = "tracking_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A grid's cases and a department's cases, newest report first."""
    op.create_index("ix_cases_grid_reported", "cases", ["grid_id", "reported_at"], schema="tracking")
    op.create_index(
        "ix_cases_department_state", "cases", ["department_id", "state", "reported_at"], schema="tracking"
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_cases_department_state", table_name="cases", schema="tracking")
    op.drop_index("ix_cases_grid_reported", table_name="cases", schema="tracking")
