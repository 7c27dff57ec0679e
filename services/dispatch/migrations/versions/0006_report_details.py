"""dispatch: the report's description, address, photos and reporter kept with the hazard, for the desk (#17).

The department desk lists its dispatches with what the grid member reported; dispatch keeps these from
``hazard.reported`` in its own table so the list is one query, not one request per row.

Revision ID: dispatch_0006
Revises: dispatch_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "dispatch_0006"
down_revision = "dispatch_0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("description", sa.Text()),
    ("address", sa.Text()),
    ("building_id", sa.Text()),
    ("reporter_id", sa.Text()),
    ("photos", pg.JSONB()),
)


def upgrade() -> None:
    """Nullable columns on the hazards (no rewrite of existing rows; older hazards show none)."""
    for name, kind in _COLUMNS:
        op.add_column("hazards", sa.Column(name, kind, nullable=True), schema="dispatch")


def downgrade() -> None:
    """Drop them."""
    for name, _ in reversed(_COLUMNS):
        op.drop_column("hazards", name, schema="dispatch")
