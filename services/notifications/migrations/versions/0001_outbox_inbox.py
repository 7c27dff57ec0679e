"""notifications: schema with the outbox and inbox tables.

Revision ID: notifications_0001
Revises:
"""

from __future__ import annotations

from alembic import op

from shared.db import create_outbox_and_inbox

revision = "notifications_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the outbox and inbox."""
    create_outbox_and_inbox(op, "notifications")


def downgrade() -> None:
    """Drop them."""
    op.drop_table("inbox", schema="notifications")
    op.drop_table("outbox", schema="notifications")
