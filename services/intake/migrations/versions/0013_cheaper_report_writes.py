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
* The table keeps half of each page free (fillfactor 50), so an updated row version fits on its
  page: the condition of a HOT update, with no index columns changed. Half, because decisions
  come back in batches in about the order the reports were accepted: one transaction rewrites
  every row of a page, and each new version (~600 bytes) needs room beside the old ones, which
  only become free once it commits. Measured with ``bench.write_costs`` (decisions, then
  acknowledgements, as HOT shares): fillfactor 85, 22% and 37%; 70, 46% and 69%; 50, 96% and
  90%, for twice the table's pages.

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
    op.execute(f"alter table {S}.reports set (fillfactor = 50)")


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
