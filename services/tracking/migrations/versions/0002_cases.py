"""tracking: cases, timeline, rectification timers and relapse hotspots.

Revision ID: tracking_0002
Revises: tracking_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "tracking_0002"
down_revision = "tracking_0001"
branch_labels = None
depends_on = None


def _tables(md: sa.MetaData) -> tuple[sa.Table, ...]:
    """The tables as they stand at this revision (a snapshot: later changes go in new revisions)."""
    ts = sa.DateTime(timezone=True)

    timeline = sa.Table(
        "timeline",
        md,
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("occurred_at", ts, nullable=False),
        sa.Column("producer", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("causation_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("recorded_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_timeline_hazard", "hazard_id", "occurred_at"),
    )

    cases = sa.Table(
        "cases",
        md,
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("category", sa.Text),
        sa.Column("grid_id", sa.Text),
        sa.Column("community_id", sa.Text),
        sa.Column("building_id", sa.Text),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("place_key", sa.Text),
        sa.Column("reporter_id", sa.Text),
        sa.Column("reported_at", ts),
        sa.Column("rectified_on_site", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("department_id", sa.Text),
        sa.Column("departments_involved", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("dispatch_id", pg.UUID(as_uuid=True)),
        sa.Column("receipt_deadline", ts),
        sa.Column("round", sa.Integer, nullable=False, server_default="0"),
        sa.Column("order_event_id", pg.UUID(as_uuid=True)),
        sa.Column("rectification_deadline", ts),
        sa.Column("rectification_overdue", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rework_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("closed_at", ts),
        sa.Column("closed_by", sa.Text),
        sa.Column("closed_department_id", sa.Text),
        sa.Column("close_reason", sa.Text),
        sa.Column("relapse_of", pg.UUID(as_uuid=True)),
        sa.Column("duplicate_of", pg.UUID(as_uuid=True)),
        sa.Column("hotspot", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", ts, nullable=False, server_default=sa.func.now()),
        # The place index of relapse lookups: closed cases by category and building, or by position.
        sa.Index(
            "ix_cases_closed_building",
            "category",
            "building_id",
            "closed_at",
            postgresql_where="closed_at IS NOT NULL",
        ),
        sa.Index(
            "ix_cases_closed_position", "category", "lat", "lon", postgresql_where="closed_at IS NOT NULL"
        ),
        sa.Index("ix_cases_duplicate_of", "duplicate_of", postgresql_where="duplicate_of IS NOT NULL"),
        sa.Index("ix_cases_state", "state"),
    )

    rectification_timers = sa.Table(
        "rectification_timers",
        md,
        sa.Column("order_event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("due_at", ts, nullable=False),
        sa.Column("fired_at", ts),
        sa.Column("cancelled_at", ts),
        sa.Index(
            "ix_rectification_timers_due",
            "due_at",
            postgresql_where="fired_at IS NULL AND cancelled_at IS NULL",
        ),
        sa.Index("ix_rectification_timers_hazard", "hazard_id"),
    )

    hotspots = sa.Table(
        "hotspots",
        md,
        sa.Column("place_key", sa.Text, primary_key=True),
        sa.Column("relapses", sa.Integer, nullable=False),
        sa.Column("categories", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("community_id", sa.Text),
        sa.Column("grid_id", sa.Text),
        sa.Column("first_relapse_at", ts, nullable=False),
        sa.Column("last_relapse_at", ts, nullable=False),
        sa.Column("last_hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("flagged_at", ts),
    )
    return (timeline, cases, rectification_timers, hotspots)


def upgrade() -> None:
    """Create the tables with their indexes."""
    bind = op.get_bind()
    for table in _tables(sa.MetaData(schema="tracking")):
        table.create(bind)


def downgrade() -> None:
    """Drop them."""
    bind = op.get_bind()
    for table in reversed(_tables(sa.MetaData(schema="tracking"))):
        table.drop(bind)
