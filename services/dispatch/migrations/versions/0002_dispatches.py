"""dispatch: hazards, dispatches (one active per hazard), returns, relapses and durable timers.

Revision ID: dispatch_0002
Revises: dispatch_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "dispatch_0002"
down_revision = "dispatch_0001"
branch_labels = None
depends_on = None

S = "dispatch"


def upgrade() -> None:
    """Create the dispatch tables and their indexes."""
    op.create_table(
        "hazards",
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("community_id", sa.Text, nullable=False),
        sa.Column("grid_id", sa.Text, nullable=False),
        sa.Column("urgency", sa.Text, nullable=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("referral_reason", sa.Text, nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("queue in ('dispatched', 'operators')", name="hazards_queue"),
        schema=S,
    )
    op.create_index(
        "hazards_operator_queue",
        "hazards",
        ["reported_at"],
        schema=S,
        postgresql_where=sa.text("queue = 'operators'"),
    )
    op.create_table(
        "returns",
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("department_id", sa.Text, primary_key=True),
        sa.Column("dispatch_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_table(
        "relapses",
        sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("original_hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("original_department_id", sa.Text, nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_table(
        "dispatches",
        sa.Column("dispatch_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("hazard_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("department_id", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text, nullable=True),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("community_id", sa.Text, nullable=False),
        sa.Column("grid_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("receipt_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_minutes", sa.Integer, nullable=False),
        sa.Column("deadline_working_time", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("previous_dispatch_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("dispatched_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.Text, nullable=True),
        sa.Column("on_time", sa.Boolean, nullable=True),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
        sa.Column("returned_reason", sa.Text, nullable=True),
        sa.Column("returned_by", sa.Text, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status in ('pending', 'acknowledged', 'returned', 'superseded')", name="dispatches_status"
        ),
        schema=S,
    )
    # One hazard, at most one active dispatch: with the inbox, this makes double dispatch impossible
    # even when several replicas handle the same hazard at once.
    op.create_index(
        "dispatches_one_active_per_hazard",
        "dispatches",
        ["hazard_id"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("status in ('pending', 'acknowledged')"),
    )
    op.create_index("dispatches_hazard", "dispatches", ["hazard_id"], schema=S)
    op.create_index(
        "dispatches_inbox", "dispatches", ["department_id", "status", "receipt_deadline"], schema=S
    )
    op.create_index("dispatches_status_deadline", "dispatches", ["status", "receipt_deadline"], schema=S)
    op.create_table(
        "timers",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("dispatch_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint("kind in ('receipt_overdue', 'escalation')", name="timers_kind"),
        sa.UniqueConstraint("dispatch_id", "kind", "level", name="timers_one_per_step"),
        schema=S,
    )
    # The timer loop's claim: unfired timers by due time.
    op.create_index(
        "timers_due",
        "timers",
        ["due_at", "level"],
        schema=S,
        postgresql_where=sa.text("fired_at is null"),
    )


def downgrade() -> None:
    """Drop them."""
    for table in ("timers", "dispatches", "relapses", "returns", "hazards"):
        op.drop_table(table, schema=S)
