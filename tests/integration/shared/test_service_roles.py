"""Each service's database role can use only its own schema (real PostgreSQL, roles made by the migration)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from sqlalchemy.engine import make_url

from shared.migrate import migrate
from shared.roles import SERVICES, role_url, service_role

pytestmark = pytest.mark.integration


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _tables(conn: Any, schema: str) -> list[str]:
    rows = await conn.fetch("select tablename from pg_tables where schemaname = $1 order by 1", schema)
    return [row["tablename"] for row in rows]


@pytest.fixture
async def migrated(database_factory: Any) -> str:
    """A new, empty database migrated here, so the roles and grants are the migration's own doing."""
    url = await database_factory(template=None)
    await migrate(url)
    return url


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_cannot_touch_another_schema_and_can_use_its_own_rows(
    migrated: str, service: str
) -> None:
    owner = await asyncpg.connect(_dsn(migrated))
    conn = await asyncpg.connect(_dsn(role_url(migrated, service)))
    try:
        assert await conn.fetchval("select current_user") == service_role(service)
        assert not await conn.fetchval(
            "select rolsuper or rolcreaterole or rolcreatedb from pg_roles where rolname = current_user"
        )
        for other in (s for s in SERVICES if s != service):
            for table in await _tables(owner, other):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"schema {other}"):
                    await conn.fetch(f"select * from {other}.{table} limit 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    f"insert into {other}.inbox_batches (event_ids) values (array[$1::uuid])", uuid.uuid4()
                )
        # No DDL, in its own schema or anywhere.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"create table {service}.intruder (i int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"alter table {service}.inbox_batches add column x int")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("create schema intruder")

        # Every table of its own schema: read, and every row privilege the service's code uses.
        own = await _tables(owner, service)
        assert {"outbox", "inbox_batches", "alembic_version"} <= set(own)
        assert await conn.fetchval(f"select count(*) from {service}.alembic_version") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"delete from {service}.alembic_version")
        for table in (t for t in own if t != "alembic_version"):
            await conn.fetchval(f"select count(*) from {service}.{table}")
            privileges = await conn.fetchval(
                # One privilege per call: a list would be true when any one of them is held.
                "select has_table_privilege(current_user, $1, 'SELECT')"
                " and has_table_privilege(current_user, $1, 'INSERT')"
                " and has_table_privilege(current_user, $1, 'UPDATE')"
                " and has_table_privilege(current_user, $1, 'DELETE')"
                " and not has_table_privilege(current_user, $1, 'TRUNCATE')"
                " and not has_table_privilege(current_user, $1, 'REFERENCES')"
                " and not has_table_privilege(current_user, $1, 'TRIGGER')",
                f"{service}.{table}",
            )
            assert privileges, f"{service}.{table}"
        # The outbox and inbox cycle every service runs: identity ids included.
        event_id = uuid.uuid4()
        row_id = await conn.fetchval(
            f"insert into {service}.outbox (event_id, topic, key, value) values ($1, 't', 'k', 'v') returning id",
            event_id,
        )
        await conn.execute(f"update {service}.outbox set key = 'k2' where id = $1", row_id)
        assert (
            await conn.fetchval(f"delete from {service}.outbox where id = $1 returning event_id", row_id)
            == event_id
        )
        batch_id = await conn.fetchval(
            f"insert into {service}.inbox_batches (event_ids) values (array[$1::uuid]) returning id", event_id
        )
        await conn.execute(
            f"update {service}.inbox_batches set event_ids = event_ids || $1 where id = $2",
            [event_id],
            batch_id,
        )
        assert await conn.fetchval(f"select count(*) from {service}.inbox_batches, unnest(event_ids)") == 2
    finally:
        await conn.close()
        await owner.close()


async def test_migrating_again_keeps_the_grants_and_sets_a_given_password(
    migrated: str, postgres: Any
) -> None:
    await migrate(migrated, services=("dispatch",), passwords={"dispatch": 'it\'s-a "secret"'})
    owner = await asyncpg.connect(_dsn(migrated))
    try:
        assert await owner.fetchval(
            "select rolpassword is not null from pg_authid where rolname = $1", service_role("dispatch")
        )
        assert await owner.fetchval(
            "select has_schema_privilege($1, 'dispatch', 'USAGE')"
            " and not has_schema_privilege($1, 'dispatch', 'CREATE')"
            " and not has_schema_privilege($1, 'intake', 'USAGE')",
            service_role("dispatch"),
        )
    finally:
        await owner.close()


async def test_where_public_may_not_connect_each_role_still_can_and_only_reporting_makes_temp_tables(
    migrated: str,
) -> None:
    name = make_url(migrated).database
    owner = await asyncpg.connect(_dsn(migrated))
    try:
        # What deploy/postgres/create-owner.sh does to a new compose database.
        await owner.execute(f'revoke all on database "{name}" from public')
        for service in SERVICES:
            await owner.execute(f'revoke all on database "{name}" from {service_role(service)}')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(_dsn(role_url(migrated, "intake")))
        await migrate(migrated)
    finally:
        await owner.close()
    for service in SERVICES:
        conn = await asyncpg.connect(_dsn(role_url(migrated, service)))
        try:
            if service == "reporting":
                await conn.execute("create temp table work (i int)")
            else:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("create temp table work (i int)")
        finally:
            await conn.close()
