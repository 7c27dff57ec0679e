"""dispatch: a dispatch is its own timer; timer rows only for the steps that fired (#20).

Every dispatch used to insert its timers up front: the receipt deadline and one row per escalation
level (4 rows and their index entries per dispatch, most never firing). Now the dispatch row
carries its frozen escalation steps (``escalation``) and the due time of its next unfired step
(``next_due_at``, under a partial index of the non-NULL ones); a timer pass moves it to the next
step in the transaction that fires one, and ``dispatch.timers`` keeps a row per step that fired.

The upgrade carries every unfired timer of a pending dispatch over (its steps and the earliest
unfired due time), so no deadline is lost, then deletes the unfired rows; the downgrade writes
the unfired steps back as timer rows.

Revision ID: dispatch_0007
Revises: dispatch_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "dispatch_0007"
down_revision = "dispatch_0006"
branch_labels = None
depends_on = None

S = "dispatch"


def upgrade() -> None:
    """Schedules onto the pending dispatches, unfired timer rows off."""
    op.add_column("dispatches", sa.Column("escalation", pg.JSONB(), nullable=True), schema=S)
    op.add_column("dispatches", sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    # Only pending dispatches with an unfired timer are rewritten; the steps that already fired are
    # at or below escalation_level (or the receipt, overdue_at set), so they are not fired again.
    op.execute(
        """
        update dispatch.dispatches d
        set escalation = s.escalation, next_due_at = s.next_due_at
        from (
            select t.dispatch_id,
                   coalesce(
                       jsonb_agg(
                           jsonb_build_object('level', t.level, 'target', t.target, 'due_at', t.due_at)
                           order by t.level
                       ) filter (where t.kind = 'escalation'),
                       '[]'::jsonb
                   ) as escalation,
                   min(t.due_at) filter (where t.fired_at is null) as next_due_at
            from dispatch.timers t
            group by t.dispatch_id
            having bool_or(t.fired_at is null)
        ) s
        where d.dispatch_id = s.dispatch_id and d.status = 'pending'
        """
    )
    op.execute("delete from dispatch.timers where fired_at is null")
    op.drop_index("timers_due", table_name="timers", schema=S)
    op.create_index(
        "dispatches_next_due",
        "dispatches",
        ["next_due_at"],
        schema=S,
        postgresql_where=sa.text("next_due_at is not null"),
    )


def downgrade() -> None:
    """The unfired steps of pending dispatches as timer rows again; the columns dropped."""
    op.execute(
        """
        insert into dispatch.timers (dispatch_id, kind, level, target, due_at)
        select dispatch_id, 'receipt_overdue', 0, department_id, receipt_deadline
        from dispatch.dispatches
        where next_due_at is not null and overdue_at is null
        union all
        select d.dispatch_id, 'escalation', (s ->> 'level')::int, s ->> 'target', (s ->> 'due_at')::timestamptz
        from dispatch.dispatches d, jsonb_array_elements(d.escalation) s
        where d.next_due_at is not null and (s ->> 'level')::int > d.escalation_level
        on conflict do nothing
        """
    )
    op.create_index(
        "timers_due",
        "timers",
        ["due_at", "level"],
        schema=S,
        postgresql_where=sa.text("fired_at is null"),
    )
    op.drop_index("dispatches_next_due", table_name="dispatches", schema=S)
    op.drop_column("dispatches", "next_due_at", schema=S)
    op.drop_column("dispatches", "escalation", schema=S)
