"""The admin schema under least privilege: reporting (the admin API's host) writes it, every other
service only reads it, and nobody changes its structure or its migration version (#18)."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy.engine import make_url

from shared.migrate import migrate
from shared.roles import ADMIN_WRITER, SERVICES, role_url

pytestmark = pytest.mark.integration

TABLES = ("state", "tokens", "denied_tokens", "departments", "routing_versions", "campaigns", "audit")


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def migrated(database_factory: Any) -> str:
    url = await database_factory(template=None)
    await migrate(url)
    return url


@pytest.mark.parametrize("service", SERVICES)
async def test_only_the_writer_changes_the_admin_schema_every_service_reads_it(
    migrated: str, service: str
) -> None:
    conn = await asyncpg.connect(_dsn(role_url(migrated, service)))
    try:
        for table in TABLES:
            await conn.fetch(f"select * from admin.{table} limit 1")
        assert await conn.fetchval("select version from admin.state") == 0
        if service == ADMIN_WRITER:
            async with conn.transaction():
                await conn.execute("update admin.state set version = version + 1")
                await conn.execute(
                    "insert into admin.audit (actor, action, entity, entity_id) values ('op', 'x', 'y', 'z')"
                )
            assert await conn.fetchval("select version from admin.state") == 1
        else:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("update admin.state set version = version + 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "insert into admin.denied_tokens (token_sha256, principal, denied_by) "
                    "values (repeat('a', 64), 'p', 'x')"
                )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("update admin.alembic_version set version_num = 'x'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("create table admin.intruder (i int)")
    finally:
        await conn.close()
