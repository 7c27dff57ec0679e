"""tracking: who was told what about a hazard (hazard.notified), shown on its timeline.

Kept apart from ``timeline``: the case is folded from its lifecycle events, and a delivery record
changes nothing of it.

Revision ID: tracking_0005
Revises: tracking_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "tracking_0005"
down_revision = "tracking_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "notifications",
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("causation_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("payload", pg.JSONB, nullable=False),
        schema="tracking",
    )
    op.create_index(
        "ix_notifications_hazard", "notifications", ["hazard_id", "occurred_at"], schema="tracking"
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("notifications", schema="tracking")
