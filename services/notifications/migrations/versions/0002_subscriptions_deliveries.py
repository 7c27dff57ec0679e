"""notifications: subscriptions, deliveries (once per event and subscription) and reminders.

Revision ID: notifications_0002
Revises: notifications_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "notifications_0002"
down_revision = "notifications_0001"
branch_labels = None
depends_on = None

S = "notifications"


def upgrade() -> None:
    """Create the tables and the indexes the loops and the delivery log read by."""
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("scope_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary, nullable=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope in ('department', 'escalation')", name="subscriptions_scope"),
        sa.CheckConstraint("channel in ('webhook', 'email')", name="subscriptions_channel"),
        schema=S,
    )
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("subscription_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("department_id", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("notice", pg.JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.CheckConstraint(
            "status in ('pending', 'retrying', 'sent', 'failed', 'cancelled')", name="deliveries_status"
        ),
        sa.UniqueConstraint("event_id", "subscription_id", name="deliveries_once_per_subscription"),
        schema=S,
    )
    op.create_table(
        "reminders",
        sa.Column("reminder_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("department_id", sa.Text, nullable=False),
        sa.Column("fraction", sa.Float, nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status in ('pending', 'fired', 'cancelled')", name="reminders_status"),
        sa.CheckConstraint("kind in ('receipt', 'rectification')", name="reminders_kind"),
        schema=S,
    )
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
