"""tracking: the timeline's two secondary indexes become one, (hazard_id, event_id) unique; cases keep
room on their pages for HOT updates (#20).

Revision ID: tracking_0008
Revises: tracking_0007

Each timeline row put an entry into three indexes: the primary key (seq), the unique event id
(the key of ``insert … on conflict do nothing``) and ``ix_timeline_hazard`` (hazard_id,
occurred_at: a case's entries). An event belongs to one hazard, so (hazard_id, event_id) is as
unique as event_id alone, and the same index finds a case's entries (every reader of the
timeline asks by hazard_id and sorts the few rows of one case itself): one index entry per row
fewer.

A case row is rewritten whole by each batch that touches it. The many events that change no
indexed column (an overdue receipt or rectification, an escalation, an urging, a progress note,
an extension asked or decided, a relapse) could be HOT updates, but a full page has no room for
the new version: the table keeps 10% of each page free (fillfactor 90). A state or department
change still writes every index (the case lists of the people's pages read them by state and by
holding department, ``tracking_0006``).
"""

from __future__ import annotations

from alembic import op

revision = "tracking_0008"
down_revision = "tracking_0007"
branch_labels = None
depends_on = None

S = "tracking"


def upgrade() -> None:
    """Replace the event id key and the hazard index by one unique (hazard_id, event_id); room on case pages."""
    op.create_index("timeline_hazard_event", "timeline", ["hazard_id", "event_id"], unique=True, schema=S)
    op.drop_constraint("timeline_event_id_key", "timeline", schema=S, type_="unique")
    op.drop_index("ix_timeline_hazard", table_name="timeline", schema=S)
    op.execute(f"alter table {S}.cases set (fillfactor = 90)")


def downgrade() -> None:
    """Back to the two indexes of tracking_0002, and full pages."""
    op.execute(f"alter table {S}.cases reset (fillfactor)")
    op.create_index("ix_timeline_hazard", "timeline", ["hazard_id", "occurred_at"], schema=S)
    op.create_unique_constraint("timeline_event_id_key", "timeline", ["event_id"], schema=S)
    op.drop_index("timeline_hazard_event", table_name="timeline", schema=S)
