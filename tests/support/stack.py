"""Pytest plugin: a real PostgreSQL and a real Kafka-protocol broker, started once per test session.

Register with ``pytest_plugins = ["tests.support.stack"]`` (or ``-p tests.support.stack``).

Fixtures: ``postgres`` and ``kafka`` (session), ``fresh_database`` (a new database per test,
copied from ``hazard_template`` when that exists), ``database_factory`` (several per test) and
``topics`` (unique lifecycle and dead-letter topics per test). ``make_template`` builds the
template once per session from a migration callable. Set ``HAZARD_KEEP_STACK_DIR=1`` to keep
the servers' data and logs after the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio
from aiokafka.errors import KafkaError

from shared.devstack.broker import BrokerError, LocalKafka
from shared.devstack.ports import free_port
from shared.devstack.postgres import LocalPostgres, PostgresError

TEMPLATE_DATABASE = "hazard_template"
LIFECYCLE_PARTITIONS = 3
DEAD_LETTER_PARTITIONS = 1
_START_ATTEMPTS = 3

Server = TypeVar("Server", LocalPostgres, LocalKafka)


def unique_name(prefix: str) -> str:
    """A name no other test uses: ``<prefix>_<12 hex>`` (valid as a database, topic or group name)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _stack_dir(prefix: str) -> Path:
    """A fresh directory under the system temp dir that the ``postgres`` OS user can enter."""
    # tmp_path_factory's root is 0700 root-owned, which the unprivileged server user cannot traverse.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _start_on_free_port(make: Callable[[int], Server]) -> Server:
    """Start a server on a free port, retrying when another process grabs the port first."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        server = make(free_port())
        try:
            server.start()
        except (PostgresError, BrokerError):
            if attempt == _START_ATTEMPTS:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def _cleanup(path: Path) -> None:
    """Remove a stack directory unless asked to keep it."""
    if os.environ.get("HAZARD_KEEP_STACK_DIR") == "1":
        print(f"\nkept {path}")
        return
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL (fsync on) for the whole session; stopped at the end."""
    base = _stack_dir("hazard-test-pg-")
    server = _start_on_free_port(
        lambda port: LocalPostgres(data_dir=base / "data", port=port, log_path=base / "postgres.log")
    )
    try:
        yield server
    finally:
        server.stop(mode="fast")
        _cleanup(base)


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    """A real Tansu broker (memory storage) for the whole session; stopped at the end."""
    base = _stack_dir("hazard-test-kafka-")
    server = _start_on_free_port(lambda port: LocalKafka(port=port, log_path=base / "tansu.log"))
    try:
        yield server
    finally:
        server.stop()
        _cleanup(base)


async def make_template(
    postgres: LocalPostgres,
    migrate: Callable[[str], Awaitable[None]],
    *,
    name: str = TEMPLATE_DATABASE,
) -> str:
    """(Re)create template database ``name``, run ``migrate(url)`` on it, and return its URL.

    ``migrate`` gets the SQLAlchemy asyncpg URL. Sessions it leaves open are ended afterwards,
    since PostgreSQL copies a template only while nobody is connected to it.
    """
    await postgres.adrop_database(name)
    await postgres.acreate_database(name)
    url = postgres.url(name)
    await migrate(url)
    await postgres.aterminate_sessions(name)
    return url


class DatabaseFactory:
    """Creates uniquely named databases for one test and drops them all afterwards."""

    def __init__(self, postgres: LocalPostgres) -> None:
        """Bind to the session's server."""
        self._postgres = postgres
        self._created: list[str] = []

    async def __call__(self, *, template: str | None = TEMPLATE_DATABASE, prefix: str = "test") -> str:
        """Create a database (from ``template`` if it exists, else empty) and return its asyncpg URL."""
        name = unique_name(prefix)
        if template is not None and not await self._postgres.adatabase_exists(template):
            template = None
        await self._postgres.acreate_database(name, template=template)
        self._created.append(name)
        return self._postgres.url(name)

    async def drop_all(self) -> None:
        """Drop every database this factory created."""
        while self._created:
            await self._postgres.adrop_database(self._created.pop())


@pytest_asyncio.fixture(loop_scope="session")
async def database_factory(postgres: LocalPostgres) -> AsyncIterator[DatabaseFactory]:
    """A callable that creates fresh databases for this test; all are dropped afterwards."""
    factory = DatabaseFactory(postgres)
    try:
        yield factory
    finally:
        await factory.drop_all()


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database(database_factory: DatabaseFactory) -> str:
    """The SQLAlchemy asyncpg URL of a new database for this test (a copy of ``hazard_template`` if any)."""
    return await database_factory()


@pytest_asyncio.fixture(loop_scope="session")
async def topics(kafka: LocalKafka) -> AsyncIterator[dict[str, str]]:
    """Unique ``lifecycle`` (3 partitions) and ``dead_letter`` (1 partition) topics for this test."""
    base = f"t-{uuid.uuid4().hex[:12]}"
    names = {"lifecycle": f"{base}-lifecycle", "dead_letter": f"{base}-dlt"}
    await kafka.create_topics(
        {names["lifecycle"]: LIFECYCLE_PARTITIONS, names["dead_letter"]: DEAD_LETTER_PARTITIONS}
    )
    yield names
    if kafka.is_running() and not kafka.paused:
        # Memory storage: free what the test wrote. A failure here must not fail the test.
        try:
            await kafka.delete_topics(names.values())
        except (KafkaError, OSError, TimeoutError) as exc:
            print(f"could not delete topics {list(names.values())}: {exc!r}")
