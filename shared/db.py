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
OUTBOX_XID_INDEX = "outbox_xid"
OUTBOX_CREATED_INDEX = "outbox_created_at"
# The relay's state before it published anything: only transaction ids below 4 are visible, and the
# rows a migration found already published carry 3 (below any real transaction id).
NOTHING_PUBLISHED = "4:4:"
ALREADY_PUBLISHED_XID = "3"


class Xid8(sa.types.UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (``xid8``): never wraps around, compared as a number."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "xid8"


class PgSnapshot(sa.types.UserDefinedType[str]):
    """PostgreSQL's ``pg_snapshot`` (``xmin:xmax:xip,...``); read and written as text."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "pg_snapshot"


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events written in the same transaction as the change they describe.

    Each row records the top-level id of the transaction that wrote it (``xid``, even inside a
    savepoint: visibility is decided on it). A row is never updated: the relay publishes by
    snapshot and records how far it got in the one row of ``outbox_relay`` (see
    :mod:`shared.outbox`), so publishing writes one state row per batch instead of one update per
    event. Rows stay for the retention period (so a broker that lost its data can be refilled)
    and are pruned oldest first (the ``created_at`` index).
    """
    table = sa.Table(
        "outbox",
        metadata,
        *_outbox_columns(),
        sa.Column("xid", Xid8(), nullable=False, server_default=sa.text("pg_current_xact_id()")),
    )
    sa.Index(OUTBOX_XID_INDEX, table.c.xid)
    sa.Index(OUTBOX_CREATED_INDEX, table.c.created_at, table.c.id)
    if f"{metadata.schema}.outbox_relay" not in metadata.tables:
        outbox_relay_table(metadata)
    return table


def outbox_relay_table(metadata: sa.MetaData) -> sa.Table:
    """The outbox relay's one state row: the snapshot published through, the one being published.

    A row of the outbox is published iff its transaction is visible in ``published_through``, or
    visible in ``target`` and its id is at most ``after_id``. Created with its row (a database
    made with ``create_all`` starts with nothing published).
    """
    table = sa.Table(
        "outbox_relay",
        metadata,
        sa.Column("one", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column(
            "published_through",
            PgSnapshot(),
            nullable=False,
            server_default=sa.text(f"'{NOTHING_PUBLISHED}'"),
        ),
        sa.Column("target", PgSnapshot(), nullable=True),
        sa.Column("after_id", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("one", name="outbox_relay_one_row"),
    )
    created = sa.DDL(f"insert into {table.fullname} default values")  # type: ignore[no-untyped-call]
    sa.event.listen(table, "after_create", created)
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


def publish_outbox_by_snapshot(op: Any, schema: str) -> None:
    """Alembic helper: from ``published_at`` stamps to the relay's snapshot state (#20).

    Rows already published get transaction id 3, visible in the initial ``published_through``;
    rows still waiting get the migration's own transaction id, so the first snapshot the relay
    takes after the migration committed publishes them.
    """
    op.execute(f"alter table {schema}.outbox add column xid xid8")
    op.execute(
        f"update {schema}.outbox set xid = case when published_at is null then pg_current_xact_id() "
        f"else '{ALREADY_PUBLISHED_XID}'::xid8 end"
    )
    op.execute(
        f"alter table {schema}.outbox alter column xid set not null, "
        "alter column xid set default pg_current_xact_id()"
    )
    op.drop_index(OUTBOX_PUBLISHED_INDEX, table_name="outbox", schema=schema)
    op.drop_index(OUTBOX_UNPUBLISHED_INDEX, table_name="outbox", schema=schema)
    op.drop_column("outbox", "published_at", schema=schema)
    op.create_index(OUTBOX_XID_INDEX, "outbox", ["xid"], schema=schema)
    op.create_index(OUTBOX_CREATED_INDEX, "outbox", ["created_at", "id"], schema=schema)
    outbox_relay_table(sa.MetaData(schema=schema)).create(op.get_bind())


def publish_outbox_by_stamp(op: Any, schema: str) -> None:
    """Alembic helper: undo :func:`publish_outbox_by_snapshot`.

    Rows the relay had published (by its state) get ``published_at = created_at``; the others
    are left null, so the stamping relay publishes them.
    """
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True)), schema=schema)
    op.execute(
        f"update {schema}.outbox o set published_at = o.created_at from {schema}.outbox_relay r "
        "where pg_visible_in_snapshot(o.xid, r.published_through) or (r.target is not null "
        "and pg_visible_in_snapshot(o.xid, r.target) and o.id <= r.after_id)"
    )
    op.create_index(
        OUTBOX_UNPUBLISHED_INDEX,
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at is null"),
    )
    op.create_index(OUTBOX_PUBLISHED_INDEX, "outbox", ["published_at", "id"], schema=schema)
    op.drop_index(OUTBOX_CREATED_INDEX, table_name="outbox", schema=schema)
    op.drop_index(OUTBOX_XID_INDEX, table_name="outbox", schema=schema)
    op.drop_column("outbox", "xid", schema=schema)
    op.drop_table("outbox_relay", schema=schema)


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
