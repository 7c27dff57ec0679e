"""tracking: closed hazards of the history import, so a new report at their place is their relapse (#18).

Revision ID: tracking_0007
Revises: tracking_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "tracking_0007"
down_revision = "tracking_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and the two lookups the relapse query makes (by building, inside a box)."""
    op.create_table(
        "imported_closures",
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("building_id", sa.Text),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("department_id", sa.Text),
        sa.Column("grid_id", sa.Text),
        sa.Column("community_id", sa.Text),
        schema="tracking",
    )
    op.create_index(
        "ix_imported_closures_building",
        "imported_closures",
        ["category", "building_id", "closed_at"],
        schema="tracking",
    )
    op.create_index(
        "ix_imported_closures_position", "imported_closures", ["category", "lat", "lon"], schema="tracking"
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("imported_closures", schema="tracking")
