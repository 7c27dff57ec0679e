"""Tables of the tracking schema (owned by this service alone)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import inbox_table, outbox_table

SCHEMA = "tracking"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
