"""Alembic environment of the admin schema (runtime administration, written by the host of the admin API)."""

from shared.migrations_env import run_migrations

run_migrations(default_schema="admin")
