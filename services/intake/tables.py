"""Tables of the intake schema (owned by this service alone)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import inbox_table, outbox_table

SCHEMA = "intake"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
    # The client's idempotency key; body_hash tells a retry (same body) from a conflict.
    sa.Column("report_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
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
    # The Open311 view, kept current from the lifecycle events.
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("status_notes", sa.Text, nullable=True),
    sa.Column("agency_responsible", sa.Text, nullable=True),
    sa.Column("expected_datetime", sa.DateTime(timezone=True), nullable=True),
    sa.Column("requested_datetime", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_datetime", sa.DateTime(timezone=True), nullable=False),
    # occurred_at of the newest lifecycle event applied to the view (late events do not regress it).
    sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
)

# Uploaded photos; the files are in the photo store under photo_id (and photo_id.thumb).
photos = sa.Table(
    "photos",
    metadata,
    sa.Column("photo_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("owner_role", sa.Text, nullable=False),
    # Set when a report names the photo, or at upload when the uploader names a hazard.
    sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("uploaded_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Historical hazards loaded by the history import (#18): never dispatched; their one event is
# hazard.imported. hazard_id is derived from record_id, so a re-import finds them again.
imported_hazards = sa.Table(
    "imported_hazards",
    metadata,
    sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("record_id", sa.Text, nullable=False, unique=True),
    sa.Column("body_hash", sa.Text, nullable=False),
    sa.Column("import_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("imported_by", sa.Text, nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("historical", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
)
