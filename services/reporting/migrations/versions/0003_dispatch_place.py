"""reporting: dispatch rows carry their hazard's place and category (no join for dispatch figures).

Revision ID: reporting_0003
Revises: reporting_0002
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0003"
down_revision = "reporting_0002"
branch_labels = None
depends_on = None

_COLUMNS = (("community_id", "text"), ("grid_id", "text"), ("category", "text"), ("campaign_ids", "text[]"))


def upgrade() -> None:
    """Add the columns (0002 already creates them on a fresh database) and fill them."""
    for name, type_ in _COLUMNS:
        op.execute(f"ALTER TABLE reporting.dispatches ADD COLUMN IF NOT EXISTS {name} {type_}")
    op.execute(
        "UPDATE reporting.dispatches d SET community_id = h.community_id, grid_id = h.grid_id, "
        "category = h.category, campaign_ids = h.campaign_ids FROM reporting.hazards h "
        "WHERE h.hazard_id = d.hazard_id AND d.community_id IS NULL AND h.community_id IS NOT NULL"
    )
    op.execute(
        "INSERT INTO reporting.rollup_dirty (day) SELECT DISTINCT report_day FROM reporting.hazards "
        "WHERE report_day IS NOT NULL ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    """Drop them."""
    for name, _ in _COLUMNS:
        op.execute(f"ALTER TABLE reporting.dispatches DROP COLUMN IF EXISTS {name}")
