"""Alembic environment of the intake schema."""

from shared.migrations_env import run_migrations

run_migrations(default_schema="intake")
