"""reporting: projection facts (hazards, dispatches, relapses) and the daily rollup.

Revision ID: reporting_0002
Revises: reporting_0001
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0002"
down_revision = "reporting_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the projection tables from the service's table definitions."""
    from services.reporting.tables import PROJECTION_TABLES

    bind = op.get_bind()
    for table in PROJECTION_TABLES:
        table.create(bind)


def downgrade() -> None:
    """Drop them."""
    from services.reporting.tables import PROJECTION_TABLES

    bind = op.get_bind()
    for table in reversed(PROJECTION_TABLES):
        table.drop(bind)
