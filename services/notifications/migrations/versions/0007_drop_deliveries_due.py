"""notifications: drop ``deliveries_due``, which no statement reads any more (#16).

Since ``notifications_0005`` the sender claims, releases and expires deliveries per target through
``deliveries_due_by_target`` (target, next_attempt_at), on the same rows (pending or retrying). The
older ``deliveries_due`` (next_attempt_at) was only written: by the consumer's insert of every
delivery and by the sender's lease and result updates (neither can be HOT: they change
``next_attempt_at`` or ``status``), three index insertions per delivery for nothing.

Revision ID: notifications_0007
Revises: notifications_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notifications_0007"
down_revision = "notifications_0006"
branch_labels = None
depends_on = None

S = "notifications"


def upgrade() -> None:
    """Drop the index."""
    op.drop_index("deliveries_due", table_name="deliveries", schema=S)


def downgrade() -> None:
    """Create it again."""
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("status in ('pending', 'retrying')"),
    )
