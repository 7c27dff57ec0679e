"""Tables of the tracking schema (owned by this service alone)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import inbox_table, outbox_table

SCHEMA = "tracking"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

_TS = sa.DateTime(timezone=True)

timeline = sa.Table(
    "timeline",
    metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("occurred_at", _TS, nullable=False),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("causation_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("payload", pg.JSONB, nullable=False),
    sa.Column("recorded_at", _TS, nullable=False, server_default=sa.func.now()),
    # An event once per case, and a case's entries: one index serves both (tracking_0008).
    sa.Index("timeline_hazard_event", "hazard_id", "event_id", unique=True),
)
"""Every event of every case, as it happened (the case is recomputed from these)."""

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("occurred_at", _TS, nullable=False),
    sa.Column("causation_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("payload", pg.JSONB, nullable=False),
    sa.Index("ix_notifications_hazard", "hazard_id", "occurred_at"),
)
"""Who was told what about a hazard (hazard.notified from the notifications service); on its timeline."""

cases = sa.Table(
    "cases",
    metadata,
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
    sa.Column("reported_at", _TS),
    sa.Column("rectified_on_site", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("department_id", sa.Text),
    sa.Column("departments_involved", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("dispatch_id", pg.UUID(as_uuid=True)),
    sa.Column("receipt_deadline", _TS),
    sa.Column("round", sa.Integer, nullable=False, server_default="0"),
    sa.Column("order_event_id", pg.UUID(as_uuid=True)),
    sa.Column("rectification_deadline", _TS),
    sa.Column("rectification_overdue", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rework_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("closed_at", _TS),
    sa.Column("closed_by", sa.Text),
    sa.Column("closed_department_id", sa.Text),
    sa.Column("close_reason", sa.Text),
    sa.Column("relapse_of", pg.UUID(as_uuid=True)),
    sa.Column("duplicate_of", pg.UUID(as_uuid=True)),
    sa.Column("hotspot", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
    # The place index of relapse lookups: closed cases by category and building, or by position.
    sa.Index(
        "ix_cases_closed_building",
        "category",
        "building_id",
        "closed_at",
        postgresql_where="closed_at IS NOT NULL",
    ),
    sa.Index("ix_cases_closed_position", "category", "lat", "lon", postgresql_where="closed_at IS NOT NULL"),
    sa.Index("ix_cases_duplicate_of", "duplicate_of", postgresql_where="duplicate_of IS NOT NULL"),
    sa.Index("ix_cases_state", "state"),
    # The people's pages' lists (tracking_0006).
    sa.Index("ix_cases_grid_reported", "grid_id", "reported_at"),
    sa.Index("ix_cases_department_state", "department_id", "state", "reported_at"),
)
"""The case of every hazard as of its timeline: a projection for queries (relapse, listings, metrics)."""

rectification_timers = sa.Table(
    "rectification_timers",
    metadata,
    sa.Column("order_event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("due_at", _TS, nullable=False),
    sa.Column("fired_at", _TS),
    sa.Column("cancelled_at", _TS),
    sa.Index(
        "ix_rectification_timers_due", "due_at", postgresql_where="fired_at IS NULL AND cancelled_at IS NULL"
    ),
    sa.Index("ix_rectification_timers_hazard", "hazard_id"),
)
"""Durable rectification deadlines: one per order, fired once or cancelled."""

hotspots = sa.Table(
    "hotspots",
    metadata,
    sa.Column("place_key", sa.Text, primary_key=True),
    sa.Column("relapses", sa.Integer, nullable=False),
    sa.Column("categories", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("community_id", sa.Text),
    sa.Column("grid_id", sa.Text),
    sa.Column("first_relapse_at", _TS, nullable=False),
    sa.Column("last_relapse_at", _TS, nullable=False),
    sa.Column("last_hazard_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("flagged_at", _TS),
)
"""Relapses counted per place; a place with enough of them is flagged as a hotspot."""

imported_closures = sa.Table(
    "imported_closures",
    metadata,
    sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("building_id", sa.Text),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("closed_at", _TS, nullable=False),
    sa.Column("department_id", sa.Text),
    sa.Column("grid_id", sa.Text),
    sa.Column("community_id", sa.Text),
    sa.Index("ix_imported_closures_building", "category", "building_id", "closed_at"),
    sa.Index("ix_imported_closures_position", "category", "lat", "lon"),
)
"""Closed hazards brought in by the history import (hazard.imported, #18): no case, no timeline,
only what a new report at the same place needs to be detected as their relapse (tracking_0007)."""
