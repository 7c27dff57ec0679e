"""The body of every service's Alembic ``env.py``: one schema per service, version table inside it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text


def run_migrations(*, default_schema: str) -> None:
    """Run migrations on the connection handed over by :mod:`shared.migrate` (online mode only)."""
    config = context.config
    schema = config.attributes.get("schema", default_schema)
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with: python -m shared.migrate --database-url URL")
    connection.execute(text(f'create schema if not exists "{schema}"'))
    context.configure(
        connection=connection,
        version_table_schema=schema,
        include_schemas=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
