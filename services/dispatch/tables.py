"""Tables of the dispatch schema (owned by this service alone)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import inbox_table, outbox_table

SCHEMA = "dispatch"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

ACTIVE_STATUSES = ("pending", "acknowledged")
"""A hazard has at most one dispatch in these states (a partial unique index holds it)."""

hazards = sa.Table(
    "hazards",
    metadata,
    sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("community_id", sa.Text, nullable=False),
    sa.Column("grid_id", sa.Text, nullable=False),
    sa.Column("urgency", sa.Text, nullable=True),
    # "dispatched": a department holds it; "operators": it waits in the operators' queue.
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("referral_reason", sa.Text, nullable=True),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # What the grid member reported (hazard.reported), shown on the department desk (dispatch_0006).
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("address", sa.Text, nullable=True),
    sa.Column("building_id", sa.Text, nullable=True),
    sa.Column("reporter_id", sa.Text, nullable=True),
    sa.Column("photos", pg.JSONB, nullable=True),
    sa.CheckConstraint("queue in ('dispatched', 'operators')", name="hazards_queue"),
)

returns = sa.Table(
    "returns",
    metadata,
    sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("department_id", sa.Text, primary_key=True),
    sa.Column("dispatch_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
)

relapses = sa.Table(
    "relapses",
    metadata,
    sa.Column("hazard_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("original_hazard_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("original_department_id", sa.Text, nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

dispatches = sa.Table(
    "dispatches",
    metadata,
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
    # A return after receipt awaiting (or given) the dispatch center's decision, in approval mode.
    sa.Column("return_request_status", sa.Text, nullable=True),
    sa.Column("return_request_reason", sa.Text, nullable=True),
    sa.Column("return_requested_by", sa.Text, nullable=True),
    sa.Column("return_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("return_decided_by", sa.Text, nullable=True),
    sa.Column("return_decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("return_refusal_reason", sa.Text, nullable=True),
    # A receipt deadline extension (延期申请): the deadline first frozen, once an approval moved it,
    # and the latest request with its decision.
    sa.Column("original_receipt_deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("extension_status", sa.Text, nullable=True),
    sa.Column("extension_requested_deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("extension_reason", sa.Text, nullable=True),
    sa.Column("extension_requested_by", sa.Text, nullable=True),
    sa.Column("extension_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("extension_previous_deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("extension_decided_by", sa.Text, nullable=True),
    sa.Column("extension_decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("extension_decision_note", sa.Text, nullable=True),
    # The operator's reason for a reassignment or an assignment from the operators' queue.
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    # The dispatch is its own timer (dispatch_0007, #20): the escalation steps frozen at dispatch time
    # ([{"level", "target", "due_at"}], after the receipt deadline itself), and when its next unfired
    # step falls due (NULL: none left, or no longer pending), under the partial index
    # dispatches_next_due the timer passes walk.
    sa.Column("escalation", pg.JSONB, nullable=True),
    sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(
        "status in ('pending', 'acknowledged', 'returned', 'superseded')", name="dispatches_status"
    ),
)

# The steps that fired, one row each, written by the pass that fired it (since dispatch_0007, #20;
# before, every step was a row written with its dispatch, and stopped ones were marked cancelled).
timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("dispatch_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
    # True when the timer came due (or was stopped) after its dispatch left `pending`: nothing published.
    sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("kind in ('receipt_overdue', 'escalation')", name="timers_kind"),
    sa.UniqueConstraint("dispatch_id", "kind", "level", name="timers_one_per_step"),
)
