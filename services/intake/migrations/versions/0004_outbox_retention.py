"""intake: published outbox rows are retained (published_at) for replay; unpublished ones are indexed apart;
reports still awaiting a dispatch decision are indexed for the reconciliation check.

Revision ID: intake_0004
Revises: intake_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import keep_no_published_outbox_rows, retain_published_outbox_rows

revision = "intake_0004"
down_revision = "intake_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add published_at and the two outbox indexes, and the undecided reports' index."""
    retain_published_outbox_rows(op, "intake")
    op.create_index(
        "reports_undecided",
        "reports",
        ["requested_datetime"],
        schema="intake",
        postgresql_where=sa.text("status = 'open' and duplicate_of is null and last_event_at is null"),
    )


def downgrade() -> None:
    """Drop them, and the published rows with them."""
    op.drop_index("reports_undecided", table_name="reports", schema="intake")
    keep_no_published_outbox_rows(op, "intake")
