"""Tables of the notifications schema (owned by this service alone)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import inbox_table, outbox_table

SCHEMA = "notifications"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("subscription_id", pg.UUID(as_uuid=True), primary_key=True),
    # "department": a department's own people; "escalation": the contacts of an escalation target;
    # "contact": a department's escalation contact as administered (admin.departments.contacts),
    # written by this service from the admin table (id: uuid5 of department and address).
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("scope_id", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("format", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False),
    # Fernet token of the webhook signing secret (never returned by the API).
    sa.Column("secret_encrypted", sa.LargeBinary, nullable=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("scope in ('department', 'escalation', 'contact')", name="subscriptions_scope"),
    sa.CheckConstraint("channel in ('webhook', 'email')", name="subscriptions_channel"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("delivery_id", sa.BigInteger, sa.Identity(), primary_key=True),
    # The lifecycle event (or reminder) notified about: with the subscription, the idempotency key.
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("subscription_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
    # Whose delivery log it appears in.
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
    # Set while a sender holds the delivery (its lease), cleared with the attempt's result.
    sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(
        "status in ('pending', 'retrying', 'sent', 'failed', 'cancelled')", name="deliveries_status"
    ),
    sa.UniqueConstraint("event_id", "subscription_id", name="deliveries_once_per_subscription"),
)

reminders = sa.Table(
    "reminders",
    metadata,
    # uuid5 of (the dispatch or order event, the fraction): the same reminder whoever writes it.
    sa.Column("reminder_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
    # "receipt" (催办 before the receipt deadline) or "rectification".
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("department_id", sa.Text, nullable=False),
    sa.Column("fraction", sa.Float, nullable=False),
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status in ('pending', 'fired', 'cancelled')", name="reminders_status"),
    sa.CheckConstraint("kind in ('receipt', 'rectification')", name="reminders_kind"),
)
