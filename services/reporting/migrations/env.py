"""Alembic environment of the reporting schema."""

from shared.migrations_env import run_migrations

run_migrations(default_schema="reporting")
