"""reporting: the histogram tables' keys put the measure before the day (span, start), so a median's
read of one measure is an index range of that measure's rows only.

Revision ID: reporting_0007
Revises: reporting_0006
"""

from __future__ import annotations

from alembic import op

revision = "reporting_0007"
down_revision = "reporting_0006"
branch_labels = None
depends_on = None

_KEYS = {
    "rollup_hist": ("grouping, day, key, measure, bucket", "grouping, measure, day, key, bucket"),
    "rollup_hist_span": (
        "grouping, span, start, key, measure, bucket",
        "grouping, measure, span, start, key, bucket",
    ),
}


def _set_keys(new: bool) -> None:
    for table, keys in _KEYS.items():
        op.execute(
            f"ALTER TABLE reporting.{table} DROP CONSTRAINT {table}_pkey, "
            f"ADD CONSTRAINT {table}_pkey PRIMARY KEY ({keys[new]}) INCLUDE (n, total_us)"
        )


def upgrade() -> None:
    """Rebuild both primary keys in the new column order (rows unchanged: no recompute needed).

    A fresh database already has them: 0002 and 0005 create these tables from today's metadata;
    rebuilding an empty index there is harmless.
    """
    _set_keys(True)


def downgrade() -> None:
    """The keys in their previous order."""
    _set_keys(False)
