"""reporting: rollup changes recorded summed per contribution key (#20).

Revision ID: reporting_0014
Revises: reporting_0013
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0014"
down_revision = "reporting_0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A change row becomes a key's signed sums: ``bucket``, ``n``, ``total_us`` replace ``sign`` and ``us``.

    Changes still recorded the old way are not converted: their days are marked dirty and they are
    deleted (they are in the facts, so the refresher's recompute of those days counts them, exactly
    once). A fresh database has the new table already (0002 uses today's tables): every step is
    a no-op there.
    """
    op.execute("LOCK TABLE reporting.rollup_changes IN ACCESS EXCLUSIVE MODE")
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'reporting' "
        "AND table_name = 'rollup_changes' AND column_name = 'sign') THEN "
        "INSERT INTO reporting.rollup_dirty (day) SELECT DISTINCT day FROM reporting.rollup_changes "
        "ON CONFLICT (day) DO UPDATE SET version = reporting.rollup_dirty.version + 1; "
        "DELETE FROM reporting.rollup_changes; END IF; END $$"
    )
    op.execute("ALTER TABLE reporting.rollup_changes DROP COLUMN IF EXISTS sign, DROP COLUMN IF EXISTS us")
    op.execute(
        "ALTER TABLE reporting.rollup_changes ADD COLUMN IF NOT EXISTS bucket smallint, "
        "ADD COLUMN IF NOT EXISTS n integer NOT NULL DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS total_us bigint NOT NULL DEFAULT 0"
    )
    # The consumers always write both: no default, as tables.py declares them.
    op.execute(
        "ALTER TABLE reporting.rollup_changes ALTER COLUMN n DROP DEFAULT, ALTER COLUMN total_us DROP DEFAULT"
    )


def downgrade() -> None:
    """Back to one row per signed contribution: pending rows' days are marked dirty and the rows deleted."""
    op.execute("LOCK TABLE reporting.rollup_changes IN ACCESS EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO reporting.rollup_dirty (day) SELECT DISTINCT day FROM reporting.rollup_changes "
        "ON CONFLICT (day) DO UPDATE SET version = reporting.rollup_dirty.version + 1"
    )
    op.execute("DELETE FROM reporting.rollup_changes")
    op.execute("ALTER TABLE reporting.rollup_changes DROP COLUMN bucket, DROP COLUMN n, DROP COLUMN total_us")
    op.execute("ALTER TABLE reporting.rollup_changes ADD COLUMN sign smallint NOT NULL, ADD COLUMN us bigint")
