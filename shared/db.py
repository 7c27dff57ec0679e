"""Database engine and session factory, and the outbox/inbox tables every service schema has."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.settings import DatabaseSettings


def create_engine(settings: DatabaseSettings, *, application_name: str = "hazard-dispatch") -> AsyncEngine:
    """An asyncpg engine for the given settings; created by factories, never at import."""
    return create_async_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        echo=settings.echo,
        connect_args={
            "server_settings": {"application_name": application_name, "jit": "on" if settings.jit else "off"}
        },
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (handlers read them when answering)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def after_commit(session: AsyncSession, action: Callable[[], None]) -> None:
    """Run ``action`` once this session's transaction commits, never if it rolls back.

    The one rule for counting what a unit of work did: a batch that fails and is retried
    must not count twice, so metrics are incremented here, not inside the transaction.
    """
    sa.event.listen(session.sync_session, "after_commit", lambda _s: action(), once=True)


_DATABASE_NOW = sa.text("select clock_timestamp()")


def array_param(name: str, column: sa.ColumnElement[Any], values: Iterable[Any] | None = None) -> Any:
    """One parameter holding a list of ``column``'s values as an array, for ``= any(…)`` / ``<> all(…)``.

    Where ``column.in_(ids)`` is compiled again at every execution and is a new SQL text (and a new
    server-side prepared statement) for every length of the list, a statement with this parameter
    has one text whatever the length: it is compiled once and prepared once per connection.
    ``values`` binds the list now; without it, the statement is built once and the list is given
    at execution.
    """
    array = pg.ARRAY(column.type)
    if values is None:
        return sa.bindparam(name, type_=array)
    return sa.bindparam(name, list(values), type_=array)


async def database_now(session: AsyncSession) -> datetime:
    """The database server's clock, read inside the caller's unit of work.

    Every deadline decision (on time or late, due or not) is taken on this clock, never on the
    process's own: replicas whose hosts disagree on the time still reach one verdict. A
    consumer's batch reads the same clock without a statement of its own: its inbox insert
    returns ``clock_timestamp()`` with the new ids (:class:`shared.consumer.EventConsumer`).
    """
    now: datetime = (await session.execute(_DATABASE_NOW)).scalar_one()
    return now


def _outbox_columns() -> list[sa.Column[Any]]:
    """The outbox's columns as first created (revision ``<service>_0001``)."""
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


OUTBOX_UNPUBLISHED_INDEX = "outbox_unpublished"
OUTBOX_PUBLISHED_INDEX = "outbox_published_at"


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events written in the same transaction as the change they describe.

    A row waits with ``published_at`` null until the relay has it confirmed by the broker, then
    stays for the retention period (so a broker that lost its data can be refilled) and is
    pruned. The partial index holds only the waiting rows, so the relay's scan stays cheap
    however many published rows are retained.
    """
    table = sa.Table(
        "outbox",
        metadata,
        *_outbox_columns(),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    sa.Index(OUTBOX_UNPUBLISHED_INDEX, table.c.id, postgresql_where=table.c.published_at.is_(None))
    sa.Index(OUTBOX_PUBLISHED_INDEX, table.c.published_at, table.c.id)
    return table


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    """Ids of the events a consumer has applied, recorded in the same transaction as their effects."""
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def create_outbox_and_inbox(op: Any, schema: str) -> None:
    """Alembic helper: create the outbox and inbox tables, as defined above, in a service's schema."""
    metadata = sa.MetaData(schema=schema)
    bind = op.get_bind()
    sa.Table("outbox", metadata, *_outbox_columns()).create(bind)
    inbox_table(metadata).create(bind)


def retain_published_outbox_rows(op: Any, schema: str) -> None:
    """Alembic helper: published rows are kept (``published_at``), unpublished ones indexed apart.

    Rows present at upgrade time are still waiting (published rows used to be deleted).
    """
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True)), schema=schema)
    op.create_index(
        OUTBOX_UNPUBLISHED_INDEX,
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at is null"),
    )
    op.create_index(OUTBOX_PUBLISHED_INDEX, "outbox", ["published_at", "id"], schema=schema)


def keep_no_published_outbox_rows(op: Any, schema: str) -> None:
    """Alembic helper: undo :func:`retain_published_outbox_rows` (published rows are dropped)."""
    op.execute(f"delete from {schema}.outbox where published_at is not null")
    op.drop_index(OUTBOX_PUBLISHED_INDEX, table_name="outbox", schema=schema)
    op.drop_index(OUTBOX_UNPUBLISHED_INDEX, table_name="outbox", schema=schema)
    op.drop_column("outbox", "published_at", schema=schema)


async def listening_connection(engine: AsyncEngine, application_name: str) -> Any:
    """A plain asyncpg connection to the engine's database, of its own (for ``LISTEN``: a pooled
    connection would be handed to other work between notifications)."""
    url = engine.url
    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        server_settings={"application_name": application_name},
        timeout=10,
    )
