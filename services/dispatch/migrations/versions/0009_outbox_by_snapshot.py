"""dispatch: the outbox relay publishes by snapshot, not by stamping each row published_at (#20).

Revision ID: dispatch_0009
Revises: dispatch_0008
"""

from __future__ import annotations

from alembic import op

from shared.db import publish_outbox_by_snapshot, publish_outbox_by_stamp

revision = "dispatch_0009"
down_revision = "dispatch_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Each row records its transaction id; the relay's state row says what is published."""
    publish_outbox_by_snapshot(op, "dispatch")


def downgrade() -> None:
    """Back to published_at: rows the relay had published are stamped with their created_at."""
    publish_outbox_by_stamp(op, "dispatch")
