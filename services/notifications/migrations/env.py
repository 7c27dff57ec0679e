"""Alembic environment of the notifications schema."""

from shared.migrations_env import run_migrations

run_migrations(default_schema="notifications")
