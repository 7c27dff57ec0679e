"""reporting: week and month levels of the per-group rollup; histogram sums in exact microseconds.

Revision ID: reporting_0005
Revises: reporting_0004
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0005"
down_revision = "reporting_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """(Re)create the histogram and span tables, empty the rollup and mark every day for a recompute.

    A fresh database already has today's tables from 0002; recreating them empty is harmless
    there. The rollup is derived data: the service's next refresh recomputes every day (and, from
    the days, the weeks and months) from the facts.
    """
    from services.reporting.tables import rollup_groups_span, rollup_hist, rollup_hist_span

    bind = op.get_bind()
    for table in (rollup_hist, rollup_groups_span, rollup_hist_span):
        op.execute(f"DROP TABLE IF EXISTS reporting.{table.name}")
        table.create(bind)
    op.execute("DELETE FROM reporting.rollup")
    op.execute("DELETE FROM reporting.rollup_groups")
    op.execute(
        "INSERT INTO reporting.rollup_dirty (day) SELECT DISTINCT report_day FROM reporting.hazards "
        "WHERE report_day IS NOT NULL UNION SELECT DISTINCT dispatch_day FROM reporting.dispatches "
        "WHERE dispatch_day IS NOT NULL ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    """Drop the span tables and give the histograms back their float sums (in minutes or hours)."""
    op.execute("DROP TABLE IF EXISTS reporting.rollup_hist_span")
    op.execute("DROP TABLE IF EXISTS reporting.rollup_groups_span")
    op.execute("ALTER TABLE reporting.rollup_hist RENAME COLUMN total_us TO total")
    op.execute(
        "ALTER TABLE reporting.rollup_hist ALTER COLUMN total TYPE double precision USING "
        "total / CASE measure WHEN 'ack' THEN 60e6 ELSE 3600e6 END"
    )
