"""reporting: per-group daily rollup with duration histograms; indexes for day range + group column.

Revision ID: reporting_0004
Revises: reporting_0003
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0004"
down_revision = "reporting_0003"
branch_labels = None
depends_on = None

_INDEXES = (
    ("hazards_community_day", "hazards", "community_id, report_day"),
    ("dispatches_community_day", "dispatches", "community_id, dispatch_day"),
    ("rollup_community_day", "rollup", "community_id, day"),
    ("rollup_category_day", "rollup", "category, day"),
)


def upgrade() -> None:
    """Create the tables and indexes (0002 already creates them on a fresh database) and fill them."""
    from services.reporting.tables import rollup_groups, rollup_hist

    bind = op.get_bind()
    rollup_groups.create(bind, checkfirst=True)
    rollup_hist.create(bind, checkfirst=True)
    for name, table, columns in _INDEXES:
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON reporting.{table} ({columns})")
    # Every day with facts is recomputed by the service's next rollup refresh.
    op.execute(
        "INSERT INTO reporting.rollup_dirty (day) SELECT DISTINCT report_day FROM reporting.hazards "
        "WHERE report_day IS NOT NULL UNION SELECT DISTINCT dispatch_day FROM reporting.dispatches "
        "WHERE dispatch_day IS NOT NULL ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    """Drop them."""
    for name, _, _ in _INDEXES:
        op.execute(f"DROP INDEX IF EXISTS reporting.{name}")
    op.execute("DROP TABLE IF EXISTS reporting.rollup_hist")
    op.execute("DROP TABLE IF EXISTS reporting.rollup_groups")
