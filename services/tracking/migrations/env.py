"""Alembic environment of the tracking schema."""

from shared.migrations_env import run_migrations

run_migrations(default_schema="tracking")
