"""The local PostgreSQL: real server, durable settings, databases on demand, clean restarts."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from shared.devstack.ports import free_port
from shared.devstack.postgres import LocalPostgres, PostgresError
from tests.support.stack import DatabaseFactory, make_template, unique_name

pytestmark = pytest.mark.integration


def _processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def scratch_dir():
    """A directory the postgres OS user can enter, removed afterwards."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="hazard-devstack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_server_accepts_connections_with_durable_settings(postgres: LocalPostgres) -> None:
    conn = await asyncpg.connect(postgres.dsn())
    try:
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in (
                "fsync",
                "synchronous_commit",
                "listen_addresses",
                "max_connections",
                "server_encoding",
            )
        }
        user, database = await conn.fetchrow("SELECT current_user, current_database()")
    finally:
        await conn.close()
    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "listen_addresses": "127.0.0.1",
        "max_connections": "200",
        "server_encoding": "UTF8",
    }
    assert (user, database) == ("hazard", "hazard")


async def test_sqlalchemy_url_connects(postgres: LocalPostgres) -> None:
    engine = create_async_engine(postgres.url())
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT 41 + 1"))).scalar_one() == 42
    finally:
        await engine.dispose()


async def test_create_copy_and_drop_database(postgres: LocalPostgres) -> None:
    source, copy = unique_name("devstack_src"), unique_name("devstack_copy")
    await postgres.acreate_database(source)
    conn = await asyncpg.connect(postgres.dsn(source))
    try:
        await conn.execute("CREATE TABLE marker (id int PRIMARY KEY); INSERT INTO marker VALUES (7)")
    finally:
        await conn.close()

    await postgres.acreate_database(copy, template=source)
    conn = await asyncpg.connect(postgres.dsn(copy))
    try:
        assert await conn.fetchval("SELECT id FROM marker") == 7
    finally:
        await conn.close()

    await postgres.adrop_database(copy)
    await postgres.adrop_database(source)
    assert not await postgres.adatabase_exists(copy)
    assert not await postgres.adatabase_exists(source)


async def test_drop_database_ends_open_sessions(postgres: LocalPostgres) -> None:
    name = unique_name("devstack_busy")
    await postgres.acreate_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    await postgres.adrop_database(name)
    assert not await postgres.adatabase_exists(name)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()


async def test_sync_helpers_work_inside_a_running_event_loop(postgres: LocalPostgres) -> None:
    name = unique_name("devstack_sync")
    postgres.create_database(name)
    assert postgres.database_exists(name)
    postgres.drop_database(name)
    assert not postgres.database_exists(name)


async def test_template_is_copied_into_new_databases(
    postgres: LocalPostgres, database_factory: DatabaseFactory
) -> None:
    template = unique_name("devstack_template")
    leaked: list[asyncpg.Connection] = []

    async def migrate(url: str) -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE migrated (id int)"))
        await engine.dispose()
        # A session left open by careless migration code must not block copying the template.
        leaked.append(await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://")))

    try:
        await make_template(postgres, migrate, name=template)
        from_template = await database_factory(template=template)
        empty = await database_factory(template=unique_name("no_such_template"))
        engine = create_async_engine(from_template)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(sa.text("SELECT count(*) FROM migrated"))).scalar_one() == 0
        finally:
            await engine.dispose()
        conn2 = await asyncpg.connect(empty.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            assert await conn2.fetchval("SELECT to_regclass('migrated')") is None
        finally:
            await conn2.close()
    finally:
        for conn in leaked:
            conn.terminate()
        await postgres.adrop_database(template)


async def test_fresh_database_fixture_is_a_new_empty_database(
    fresh_database: str, postgres: LocalPostgres
) -> None:
    name = fresh_database.rsplit("/", 1)[-1]
    assert name.startswith("test_")
    assert fresh_database == postgres.url(name)
    assert await postgres.adatabase_exists(name)


async def test_init_is_idempotent_and_data_survives_restarts(scratch_dir: Path) -> None:
    data_dir = scratch_dir / "data"
    server = LocalPostgres(data_dir=data_dir, port=free_port(), log_path=scratch_dir / "pg.log")
    try:
        started = time.perf_counter()
        assert server.init() is True
        init_seconds = time.perf_counter() - started
        assert server.init() is False
        started = time.perf_counter()
        server.start()
        first_start = time.perf_counter() - started
        conn = await asyncpg.connect(server.dsn())
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()

        server.stop()
        assert not server.is_running()
        started = time.perf_counter()
        server.start()
        second_start = time.perf_counter() - started
        server.restart()
        conn = await asyncpg.connect(server.dsn())
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "still here"
        finally:
            await conn.close()
        print(
            f"\ninitdb {init_seconds:.2f}s, first start {first_start:.2f}s, second start {second_start:.2f}s"
        )
    finally:
        server.stop()
    assert not server.is_running()
    assert _processes_using(data_dir) == []
    if os.geteuid() == 0:
        assert data_dir.stat().st_uid != 0  # owned by the unprivileged server user


async def test_start_fails_clearly_when_the_port_is_taken(scratch_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = LocalPostgres(data_dir=scratch_dir / "data", port=port, log_path=scratch_dir / "pg.log")
        with pytest.raises(PostgresError, match="exited with code") as failure:
            server.start()
    assert "Address already in use" in str(failure.value)
    assert not server.is_running()
    assert _processes_using(scratch_dir / "data") == []
