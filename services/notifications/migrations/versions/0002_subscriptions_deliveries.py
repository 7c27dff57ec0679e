"""notifications: subscriptions, deliveries (once per event and subscription) and reminders.

Revision ID: notifications_0002
Revises: notifications_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.notifications.tables import deliveries, reminders, subscriptions

revision = "notifications_0002"
down_revision = "notifications_0001"
branch_labels = None
depends_on = None

S = "notifications"


def upgrade() -> None:
    """Create the tables and the indexes the loops and the delivery log read by."""
    bind = op.get_bind()
    for table in (subscriptions, deliveries, reminders):
        table.create(bind)
    op.create_index(
        "subscriptions_scope",
        "subscriptions",
        ["scope", "scope_id"],
        schema=S,
        postgresql_where=sa.text("deleted_at is null"),
    )
    # The sender's claim: unsettled deliveries by when they are next due.
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("status in ('pending', 'retrying')"),
    )
    op.create_index("deliveries_log", "deliveries", ["department_id", "delivery_id"], schema=S)
    op.create_index("deliveries_hazard", "deliveries", ["hazard_id"], schema=S)
    op.create_index(
        "reminders_due", "reminders", ["due_at"], schema=S, postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index(
        "reminders_hazard",
        "reminders",
        ["hazard_id", "kind"],
        schema=S,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    """Drop them."""
    for table in ("reminders", "deliveries", "subscriptions"):
        op.drop_table(table, schema=S)
