"""dispatch: the inbox as one row per applied batch, its event ids in an array (#20).

The inbox held a row and a primary-key entry per applied event: the largest share of the rows
written per hazard. Now each batch's transaction records the ids it applied as one array
(``dispatch.inbox_batches``, GIN-indexed), still deduplicating by event id
(``shared.db.inbox_table``). The upgrade carries every recorded id over, so nothing applied
before it is applied again; the downgrade writes one row per id back.

Revision ID: dispatch_0008
Revises: dispatch_0007
"""

from __future__ import annotations

from alembic import op

from shared.db import inbox_by_batch, inbox_by_event

revision = "dispatch_0008"
down_revision = "dispatch_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The applied ids, from a row each to rows of arrays."""
    inbox_by_batch(op, "dispatch")


def downgrade() -> None:
    """A row per applied id again."""
    inbox_by_event(op, "dispatch")
