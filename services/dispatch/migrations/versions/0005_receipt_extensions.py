"""dispatch: requests to extend a receipt deadline (延期申请) and the original deadline they moved (#16).

Revision ID: dispatch_0005
Revises: dispatch_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dispatch_0005"
down_revision = "dispatch_0004"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("original_receipt_deadline", sa.DateTime(timezone=True)),
    ("extension_status", sa.Text),
    ("extension_requested_deadline", sa.DateTime(timezone=True)),
    ("extension_reason", sa.Text),
    ("extension_requested_by", sa.Text),
    ("extension_requested_at", sa.DateTime(timezone=True)),
    ("extension_previous_deadline", sa.DateTime(timezone=True)),
    ("extension_decided_by", sa.Text),
    ("extension_decided_at", sa.DateTime(timezone=True)),
    ("extension_decision_note", sa.Text),
)


def upgrade() -> None:
    """Nullable columns on the dispatches (no rewrite of existing rows)."""
    for name, kind in _COLUMNS:
        op.add_column("dispatches", sa.Column(name, kind, nullable=True), schema="dispatch")
    op.create_index(
        "dispatches_extension_awaiting_approval",
        "dispatches",
        ["extension_requested_at"],
        schema="dispatch",
        postgresql_where=sa.text("extension_status = 'awaiting_approval'"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("dispatches_extension_awaiting_approval", table_name="dispatches", schema="dispatch")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("dispatches", name, schema="dispatch")
