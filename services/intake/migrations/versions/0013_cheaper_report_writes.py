"""intake: cheaper report writes (#20): the Open311 view's updates can be HOT; fewer index entries per report.

Revision ID: intake_0013
Revises: intake_0012

* ``reports_undecided`` (requested_datetime, where open, original and ``last_event_at is null``)
  goes: a column in an index's predicate counts as indexed, so every update setting
  ``last_event_at`` (each lifecycle event applied to the view, the first decision included) was
  a non-HOT update, writing a new entry into every index of the table. The reconciliation check
  finds the undecided reports among the open originals instead, through ``reports_open_near``,
  whose predicate they satisfy (see ``repository.UNDECIDED``): a check every 30 s reads the open
  originals rather than only the undecided ones.
* ``reports_duplicate_of`` holds only the reports that are duplicates (its two lookups ask for
  ``duplicate_of = …``, which implies ``is not null``): most reports are originals, and each of
  them put a NULL entry into it.
* The table keeps 15% of each page free (fillfactor 85), so an updated row version fits on its
  page: the condition of a HOT update, with no index columns changed.

``reports_requested`` stays: the Open311 GET requests (newest first within the last 90 days)
read it backwards and stop after the page.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "intake_0013"
down_revision = "intake_0012"
branch_labels = None
depends_on = None

S = "intake"


def upgrade() -> None:
    """Drop the undecided index, narrow the duplicate index to duplicates, leave room on each page."""
    op.drop_index("reports_undecided", table_name="reports", schema=S)
    op.drop_index("reports_duplicate_of", table_name="reports", schema=S)
    op.create_index(
        "reports_duplicate_of",
        "reports",
        ["duplicate_of"],
        schema=S,
        postgresql_where=sa.text("duplicate_of is not null"),
    )
    op.execute(f"alter table {S}.reports set (fillfactor = 85)")


def downgrade() -> None:
    """Back to the indexes of intake_0004 and full pages."""
    op.execute(f"alter table {S}.reports reset (fillfactor)")
    op.drop_index("reports_duplicate_of", table_name="reports", schema=S)
    op.create_index("reports_duplicate_of", "reports", ["duplicate_of"], schema=S)
    op.create_index(
        "reports_undecided",
        "reports",
        ["requested_datetime"],
        schema=S,
        postgresql_where=sa.text("status = 'open' and duplicate_of is null and last_event_at is null"),
    )
