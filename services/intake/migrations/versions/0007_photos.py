"""intake: uploaded photos (who uploaded each, and the hazard it belongs to once attached).

Revision ID: intake_0007
Revises: intake_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "intake_0007"
down_revision = "intake_0004"
branch_labels = None
depends_on = None

S = "intake"


def upgrade() -> None:
    """Create the photos table and its hazard index."""
    op.create_table(
        "photos",
        sa.Column("photo_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("owner_role", sa.Text, nullable=False),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("uploaded_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index(
        "photos_hazard", "photos", ["hazard_id"], schema=S, postgresql_where=sa.text("hazard_id is not null")
    )


def downgrade() -> None:
    """Drop the photos table."""
    op.drop_table("photos", schema=S)
