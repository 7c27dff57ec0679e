"""Alembic environment of the dispatch schema."""

from shared.migrations_env import run_migrations

run_migrations(default_schema="dispatch")
