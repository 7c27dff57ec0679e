"""intake: historical hazards loaded by the history import (#18 item 2).

Revision ID: intake_0012
Revises: intake_0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "intake_0012"
down_revision = "intake_0007"
branch_labels = None
depends_on = None

S = "intake"


def upgrade() -> None:
    """Create the imported_hazards table (one row per imported record, keyed by its derived hazard id)."""
    op.create_table(
        "imported_hazards",
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("record_id", sa.Text, nullable=False, unique=True),
        sa.Column("body_hash", sa.Text, nullable=False),
        sa.Column("import_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("imported_by", sa.Text, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("historical", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )


def downgrade() -> None:
    """Drop the imported_hazards table."""
    op.drop_table("imported_hazards", schema=S)
