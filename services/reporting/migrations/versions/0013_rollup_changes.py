"""reporting: the rollup's changes recorded with the facts, folded in by the refresher (#20).

Revision ID: reporting_0013
Revises: reporting_0012
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0013"
down_revision = "reporting_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``rollup_changes`` (a fresh database has it already: 0002 uses today's tables).

    Days still marked dirty are recomputed by the refresher as before; from now on the consumer
    records each batch's changes to the rollup instead of marking days.
    """
    from services.reporting.tables import rollup_changes

    rollup_changes.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    """Drop it (changes not yet folded are lost: mark their days dirty first, or rebuild)."""
    op.execute("DROP TABLE IF EXISTS reporting.rollup_changes")
