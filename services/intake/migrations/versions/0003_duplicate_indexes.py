"""intake: open-duplicate indexes that each serve only their own lookup.

Revision ID: intake_0003
Revises: intake_0002

The two lookups of an open duplicate (same building; inside a box around the point) had
partial indexes with the same predicate, so each index could serve either lookup: scanning
every open report of the category and filtering. Before the table's first ANALYZE (a new
deployment's first minute: autovacuum has not looked yet) the planner, whose estimates are
then equal, picked the wrong one, and a 500-report batch's probe took ~700 ms instead of
~5 ms. Now each predicate names a column only its own lookup constrains (``building_id = …``
implies ``building_id is not null``; ``lat between …`` implies ``lat is not null``), so the
planner cannot use an index for the other lookup whatever its statistics.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "intake_0003"
down_revision = "intake_0002"
branch_labels = None
depends_on = None

S = "intake"
OPEN_ORIGINALS = "status = 'open' and duplicate_of is null"


def upgrade() -> None:
    """Replace the two open-duplicate indexes."""
    op.drop_index("reports_open_by_building", table_name="reports", schema=S)
    op.drop_index("reports_open_by_place", table_name="reports", schema=S)
    op.create_index(
        "reports_open_at_building",
        "reports",
        ["category", "building_id"],
        schema=S,
        postgresql_where=sa.text(f"{OPEN_ORIGINALS} and building_id is not null"),
    )
    op.create_index(
        "reports_open_near",
        "reports",
        ["category", "lat", "lon"],
        schema=S,
        postgresql_where=sa.text(f"{OPEN_ORIGINALS} and lat is not null"),
    )


def downgrade() -> None:
    """Back to the indexes of 0002."""
    op.drop_index("reports_open_at_building", table_name="reports", schema=S)
    op.drop_index("reports_open_near", table_name="reports", schema=S)
    open_originals = sa.text(OPEN_ORIGINALS)
    op.create_index(
        "reports_open_by_building",
        "reports",
        ["category", "building_id"],
        schema=S,
        postgresql_where=open_originals,
    )
    op.create_index(
        "reports_open_by_place",
        "reports",
        ["category", "lat", "lon"],
        schema=S,
        postgresql_where=open_originals,
    )
