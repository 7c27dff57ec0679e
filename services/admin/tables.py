"""Tables of the admin schema (admin_0001; written by the reporting role alone, read by every role)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

SCHEMA = "admin"
metadata = sa.MetaData(schema=SCHEMA)

state = sa.Table(
    "state",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_sha256", sa.Text, primary_key=True),
    sa.Column("principal", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("grid_id", sa.Text),
    sa.Column("department_id", sa.Text),
    sa.Column("reporter_type", sa.Text),
    sa.Column("building_ids", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_by", sa.Text),
)

denied_tokens = sa.Table(
    "denied_tokens",
    metadata,
    sa.Column("token_sha256", sa.Text, primary_key=True),
    sa.Column("principal", sa.Text, nullable=False),
    sa.Column("denied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("denied_by", sa.Text, nullable=False),
)

departments = sa.Table(
    "departments",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name_en", sa.Text, nullable=False),
    sa.Column("name_zh", sa.Text, nullable=False),
    sa.Column("contacts", pg.JSONB, nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

routing_versions = sa.Table(
    "routing_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("rules", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("created_by", sa.Text, nullable=False),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("body", pg.JSONB, nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("entity_id", sa.Text, nullable=False),
    sa.Column("before", pg.JSONB(none_as_null=True)),
    sa.Column("after", pg.JSONB(none_as_null=True)),
)

# Read only: reporting's projection, asked whether a department still holds open hazards.
reporting_hazards = sa.table(
    "hazards",
    sa.column("department_id", sa.Text),
    sa.column("closed_at", sa.DateTime(timezone=True)),
    schema="reporting",
)
