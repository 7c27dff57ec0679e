"""dispatch: requests to return a hazard after receipt, and the dispatch center's decision (#21).

Revision ID: dispatch_0004
Revises: dispatch_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0004"
down_revision = "dispatch_0003"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("return_request_status", sa.Text),
    ("return_request_reason", sa.Text),
    ("return_requested_by", sa.Text),
    ("return_requested_at", sa.DateTime(timezone=True)),
    ("return_decided_by", sa.Text),
    ("return_decided_at", sa.DateTime(timezone=True)),
    ("return_refusal_reason", sa.Text),
)


def upgrade() -> None:
    """Nullable columns on the dispatches (no rewrite of existing rows)."""
    for name, kind in _COLUMNS:
        op.add_column("dispatches", sa.Column(name, kind, nullable=True), schema="dispatch")
    op.create_index(
        "dispatches_return_awaiting_approval",
        "dispatches",
        ["return_requested_at"],
        schema="dispatch",
        postgresql_where=sa.text("return_request_status = 'awaiting_approval'"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("dispatches_return_awaiting_approval", table_name="dispatches", schema="dispatch")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("dispatches", name, schema="dispatch")
