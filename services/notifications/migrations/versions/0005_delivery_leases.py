"""notifications: the sender's claim per target, and leases told apart from retry times.

``leased_until`` marks a delivery a sender holds (set by the claim, cleared with the result), so
that a target's return can bring its held retries forward without touching one in flight.
``deliveries_due_by_target`` serves the claim, which takes each target's earliest due deliveries
(a target with a long backlog is not scanned past by the others).

Revision ID: notifications_0005
Revises: notifications_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notifications_0005"
down_revision = "notifications_0003"
branch_labels = None
depends_on = None

S = "notifications"


def upgrade() -> None:
    """Add the lease column and the per-target index."""
    op.add_column(
        "deliveries", sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True), schema=S
    )
    op.create_index(
        "deliveries_due_by_target",
        "deliveries",
        ["target", "next_attempt_at"],
        schema=S,
        postgresql_where=sa.text("status in ('pending', 'retrying')"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("deliveries_due_by_target", table_name="deliveries", schema=S)
    op.drop_column("deliveries", "leased_until", schema=S)
