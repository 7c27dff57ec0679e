"""Test-wide fixtures: the real PostgreSQL and broker (tests.support.stack) and a migrated template."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

if TYPE_CHECKING:
    from shared.devstack.postgres import LocalPostgres
    from tests.support.stack import DatabaseFactory

pytest_plugins = ["tests.support.stack", "tests.support.statuses"]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated_template(postgres: LocalPostgres) -> str:
    """A database with every service's migrations applied, copied for each test that needs one."""
    from shared.migrate import migrate
    from tests.support.stack import make_template

    return await make_template(postgres, migrate)


@pytest_asyncio.fixture(loop_scope="session")
async def db_url(migrated_template: str, database_factory: DatabaseFactory) -> str:
    """The URL of a fresh, fully migrated database of this test's own."""
    return await database_factory()
