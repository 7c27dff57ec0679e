"""intake: reports (idempotency keys, the Open311 view) and the open-duplicate indexes.

Revision ID: intake_0002
Revises: intake_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "intake_0002"
down_revision = "intake_0001"
branch_labels = None
depends_on = None

S = "intake"


def upgrade() -> None:
    """Create the reports table and its indexes."""
    op.create_table(
        "reports",
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("report_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("body_hash", sa.Text, nullable=False),
        sa.Column("reporter_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("grid_id", sa.Text, nullable=False),
        sa.Column("community_id", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("building_id", sa.Text, nullable=True),
        sa.Column("photos", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rectified_on_site", sa.Boolean, nullable=False),
        sa.Column("campaign_ids", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("urgency", sa.Text, nullable=True),
        sa.Column("duplicate_of", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_notes", sa.Text, nullable=True),
        sa.Column("agency_responsible", sa.Text, nullable=True),
        sa.Column("expected_datetime", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("report_id", name="reports_report_id_key"),
        sa.CheckConstraint("status in ('open', 'closed')", name="reports_status"),
        sa.CheckConstraint("source in ('app', 'batch', 'open311')", name="reports_source"),
        schema=S,
    )
    # Open-duplicate lookups only ever look at open originals of one category.
    open_originals = sa.text("status = 'open' and duplicate_of is null")
    op.create_index(
        "reports_open_by_building",
        "reports",
        ["category", "building_id"],
        schema=S,
        postgresql_where=open_originals,
    )
    op.create_index(
        "reports_open_by_place",
        "reports",
        ["category", "lat", "lon"],
        schema=S,
        postgresql_where=open_originals,
    )
    op.create_index("reports_duplicate_of", "reports", ["duplicate_of"], schema=S)
    # Open311 GET requests: by time window (and service code).
    op.create_index("reports_requested", "reports", ["requested_datetime"], schema=S)


def downgrade() -> None:
    """Drop the reports table (its indexes go with it)."""
    op.drop_table("reports", schema=S)
