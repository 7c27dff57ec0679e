"""notifications: published outbox rows are retained (published_at) for replay; unpublished ones are indexed apart.

Revision ID: notifications_0003
Revises: notifications_0002
"""

from __future__ import annotations

from alembic import op

from shared.db import keep_no_published_outbox_rows, retain_published_outbox_rows

revision = "notifications_0003"
down_revision = "notifications_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add published_at and the two indexes."""
    retain_published_outbox_rows(op, "notifications")


def downgrade() -> None:
    """Drop them, and the published rows with them."""
    keep_no_published_outbox_rows(op, "notifications")
