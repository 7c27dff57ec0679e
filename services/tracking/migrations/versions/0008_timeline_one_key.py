"""tracking: the timeline's two secondary indexes become one, (hazard_id, event_id) unique (#20).

Revision ID: tracking_0008
Revises: tracking_0007

Each timeline row put an entry into three indexes: the primary key (seq), the unique event id
(the key of ``insert … on conflict do nothing``) and ``ix_timeline_hazard`` (hazard_id,
occurred_at: a case's entries). An event belongs to one hazard, so (hazard_id, event_id) is as
unique as event_id alone, and the same index finds a case's entries (every reader of the
timeline asks by hazard_id and sorts the few rows of one case itself): one index entry per row
fewer.
"""

from __future__ import annotations

from alembic import op

revision = "tracking_0008"
down_revision = "tracking_0007"
branch_labels = None
depends_on = None

S = "tracking"


def upgrade() -> None:
    """Replace the event id key and the hazard index by one unique (hazard_id, event_id)."""
    op.create_index("timeline_hazard_event", "timeline", ["hazard_id", "event_id"], unique=True, schema=S)
    op.drop_constraint("timeline_event_id_key", "timeline", schema=S, type_="unique")
    op.drop_index("ix_timeline_hazard", table_name="timeline", schema=S)


def downgrade() -> None:
    """Back to the two indexes of tracking_0002."""
    op.create_index("ix_timeline_hazard", "timeline", ["hazard_id", "occurred_at"], schema=S)
    op.create_unique_constraint("timeline_event_id_key", "timeline", ["event_id"], schema=S)
    op.drop_index("timeline_hazard_event", table_name="timeline", schema=S)
