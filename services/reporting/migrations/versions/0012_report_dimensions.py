"""reporting: reporter type, source and on-the-spot notices; street and escalation level on dispatches (#18).

Revision ID: reporting_0012
Revises: reporting_0010
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0012"
down_revision = "reporting_0011"
branch_labels = None
depends_on = None

_COUNT_TABLES = ("rollup", "rollup_groups", "rollup_groups_span")
_NEW_COUNTS = ("notices_on_site", "notices_ordered", "escalated", "escalations")


def upgrade() -> None:
    """Add the columns (a fresh database has them already: 0002 uses today's tables).

    Hazards applied before have no reporter type or source (read as a grid member's report from the
    app), no on-the-spot notice and no escalation; a rebuild gives them theirs. The dispatches get their hazard's
    street now, and every day is marked for a recompute, so the new groupings (street, reporter
    type, source, street x category, campaign x category) and counts cover the old days too.
    """
    for column, kind in (("reporter_type", "text"), ("source", "text"), ("notice_on_site", "boolean")):
        op.execute(f"ALTER TABLE reporting.hazards ADD COLUMN IF NOT EXISTS {column} {kind}")
    for column, kind in (
        ("street_id", "text"),
        ("reporter_type", "text"),
        ("source", "text"),
        ("escalation_level", "integer"),
    ):
        op.execute(f"ALTER TABLE reporting.dispatches ADD COLUMN IF NOT EXISTS {column} {kind}")
    for table in _COUNT_TABLES:
        for column in _NEW_COUNTS:
            op.execute(
                f"ALTER TABLE reporting.{table} ADD COLUMN IF NOT EXISTS {column} integer NOT NULL DEFAULT 0"
            )
    op.execute(
        "UPDATE reporting.dispatches d SET street_id = h.street_id FROM reporting.hazards h "
        "WHERE h.hazard_id = d.hazard_id AND d.street_id IS NULL AND h.street_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO reporting.rollup_dirty (day) "
        "SELECT DISTINCT report_day FROM reporting.hazards WHERE report_day IS NOT NULL "
        "UNION SELECT DISTINCT dispatch_day FROM reporting.dispatches WHERE dispatch_day IS NOT NULL "
        "ON CONFLICT (day) DO NOTHING"
    )


def downgrade() -> None:
    """Drop them."""
    for table in _COUNT_TABLES:
        for column in _NEW_COUNTS:
            op.execute(f"ALTER TABLE reporting.{table} DROP COLUMN IF EXISTS {column}")
    for column in ("street_id", "reporter_type", "source", "escalation_level"):
        op.execute(f"ALTER TABLE reporting.dispatches DROP COLUMN IF EXISTS {column}")
    for column in ("reporter_type", "source", "notice_on_site"):
        op.execute(f"ALTER TABLE reporting.hazards DROP COLUMN IF EXISTS {column}")
