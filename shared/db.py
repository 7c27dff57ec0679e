"""Database engine and session factory, and the outbox/inbox tables every service schema has."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.settings import DatabaseSettings
from shared.topics import LIFECYCLE_PARTITIONS


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


def relay_state_table(schema: str | None) -> str:
    """The outbox relay's state table of a schema (:func:`outbox_relay_table`)."""
    return f"{schema}.outbox_relay" if schema else "outbox_relay"


def relay_state_sql(schema: str | None) -> str:
    """A one-row relation ``s(done, target, after_id)``: the relay's state, or nothing published."""
    return (
        f"(select coalesce(r.published_through, '{NOTHING_PUBLISHED}'::pg_snapshot) as done, r.target, "
        f"coalesce(r.after_id, 0) as after_id from (values (true)) as v(one) "
        f"left join {relay_state_table(schema)} as r on r.one)"
    )


PUBLISHED_BY_STATE = (
    "(pg_visible_in_snapshot(o.xid, s.done) or (s.target is not null "
    "and pg_visible_in_snapshot(o.xid, s.target) and o.id <= s.after_id))"
)
"""Outbox row ``o`` is published by relay state ``s`` (:func:`relay_state_sql`): the invariant of
:mod:`shared.outbox`."""


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


INBOX_TABLE = "inbox_batches"
INBOX_EVENT_IDS_INDEX = "inbox_batches_event_ids"
INBOX_CHUNK = 1000
"""Event ids per row when a migration moves an inbox from one shape to the other."""
INBOX_INDEX_OPTIONS = {"fastupdate": "off"}
"""Storage options of the inbox's GIN index (see :func:`inbox_table`)."""
INBOX_LOCK_CLASS = 0x1B0C
"""First key of the consumers' inbox locks (the two-key advisory form; see :func:`inbox_lock_keys`)."""
INBOX_LOCK_SLOTS = LIFECYCLE_PARTITIONS
"""The lifecycle topic's partitions are locked modulo this: its first partition count (see
:func:`inbox_lock_keys`). The topic may grow only to multiples of it (12, 18, ...)."""


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    """The ids of the events a consumer has applied, one row per applied batch (#20).

    Each batch's transaction records the ids it applied as one array, so a redelivered or
    republished event is still recognised by its id (a topic recreated empty, a relay sending a
    row twice, outbox and dead-letter replays), at one row per batch instead of a row and a
    primary-key entry per event. The GIN index finds the rows holding any of a batch's ids
    (``event_ids && :ids``); it is built without the pending list (``fastupdate = off``, see
    ``bench/inbox_index.py``): every batch's lookup would otherwise scan the whole pending list.

    The batch's lookup and insert are one function, :func:`inbox_record_sql` (created with the
    table), called once per batch. Arrays have no uniqueness: two transactions applying the same
    event at once are kept apart by the advisory locks it takes first (:func:`inbox_lock_keys`).
    """
    table = sa.Table(
        INBOX_TABLE,
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_ids", pg.ARRAY(pg.UUID(as_uuid=True)), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    sa.Index(
        INBOX_EVENT_IDS_INDEX,
        table.c.event_ids,
        postgresql_using="gin",
        postgresql_with=INBOX_INDEX_OPTIONS,
    )
    create, drop = inbox_record_function(table), _drop_inbox_record_function(table.schema)
    sa.event.listen(table, "after_create", sa.DDL(create))  # type: ignore[no-untyped-call]
    sa.event.listen(table, "before_drop", sa.DDL(drop))  # type: ignore[no-untyped-call]
    return table


def _inbox_record_name(schema: str | None) -> str:
    return f"{schema}.inbox_record" if schema else "inbox_record"


def inbox_record_function(table: sa.Table) -> str:
    """The function a consumer's batch calls first: lock, look up, record (see :func:`inbox_record_sql`).

    Each statement of a volatile PL/pgSQL function takes its own snapshot: the lookup, made once
    the locks are held, sees what the transaction it waited for committed. Sequential scans are
    off while it is planned: ``&&`` compares every element of both arrays, so a scan of even a
    few rows of big batches costs milliseconds where the index finds none; the planner, costing
    the operator once per row, would pick the scan while the table is small. The ids of the rows
    found are matched against the batch's by a hash (``IN (SELECT unnest(ids))``), not ``= ANY``:
    tracking's own events come back in batches whose rows hold thousands of ids.
    """
    name = _inbox_record_name(table.schema)
    return f"""
CREATE FUNCTION {name}(lock_class integer, lock_keys integer[], ids uuid[],
    OUT batch_id bigint, OUT seen uuid[], OUT now timestamptz)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $fn$
DECLARE
    k integer;
BEGIN
    FOREACH k IN ARRAY lock_keys LOOP
        PERFORM pg_advisory_xact_lock(lock_class, k);
    END LOOP;
    seen := ARRAY(
        SELECT DISTINCT u.id
        FROM {table.fullname} AS b CROSS JOIN LATERAL unnest(b.event_ids) AS u(id)
        WHERE b.event_ids && ids AND u.id IN (SELECT unnest(ids))
    );
    IF cardinality(seen) = 0 THEN
        INSERT INTO {table.fullname} (event_ids) VALUES (ids) RETURNING id INTO batch_id;
    ELSIF cardinality(seen) < cardinality(ids) THEN
        INSERT INTO {table.fullname} (event_ids)
        VALUES (ARRAY(SELECT unnest(ids) EXCEPT SELECT unnest(seen)))
        RETURNING id INTO batch_id;
    END IF;
    now := clock_timestamp();
END
$fn$
"""


def _drop_inbox_record_function(schema: str | None) -> str:
    return f"DROP FUNCTION IF EXISTS {_inbox_record_name(schema)}(integer, integer[], uuid[])"


def inbox_record_sql(table: sa.Table) -> sa.TextualSelect:
    """The one statement a consumer's batch starts with, whatever its size (prepared once per connection).

    In the batch's transaction it takes the advisory locks ``:lock_keys`` (of the batch's
    partitions, :func:`inbox_lock_keys`, in that order: a transaction applying the same events
    waits until the other commits), then finds which of the batch's ``:ids`` are already
    recorded, records the others as one row, and returns that row's id (NULL when none was new),
    the ids already recorded and the database's clock: the batch's ``now``
    (:func:`database_now`) without a statement of its own.
    """
    return (
        sa.text(
            f"SELECT batch_id, seen, now FROM {_inbox_record_name(table.schema)}"
            "(CAST(:lock_class AS integer), CAST(:lock_keys AS integer[]), CAST(:ids AS uuid[]))"
        )
        .bindparams(sa.bindparam("lock_class", INBOX_LOCK_CLASS))
        .columns(
            sa.column("batch_id", sa.BigInteger),
            sa.column("seen", pg.ARRAY(pg.UUID(as_uuid=True))),
            sa.column("now", sa.DateTime(timezone=True)),
        )
    )


def _first_inbox_table(metadata: sa.MetaData) -> sa.Table:
    """The inbox as first created (revision ``<service>_0001``): a row per applied event."""
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def inbox_lock_keys(table: sa.Table, partitions: Iterable[int]) -> list[int]:
    """The second keys of the advisory locks a batch from these partitions takes, in the order to take them.

    The lock is what the old inbox's primary key did by itself: a consumer applying an event
    waits for another transaction applying the same event (a rebalance hands a partition over
    while its old owner is still applying a batch), then finds it recorded. Every copy of an
    event is keyed by its hazard id, and Kafka's partitioner puts a key on ``hash mod
    partitions``: while the topic's partition count stays a multiple of :data:`INBOX_LOCK_SLOTS`,
    every copy of an event (a relay's second send, an outbox replay, a dead-letter replay, even
    across a growth from 6 to 12 partitions) is on a partition congruent modulo that count, so
    one lock per (inbox, partition modulo :data:`INBOX_LOCK_SLOTS`) serialises them, and the
    consumers of different partitions still apply in parallel. Sorted, so two batches spanning
    several partitions never wait for each other in a cycle.
    """
    slots = sorted({p % INBOX_LOCK_SLOTS for p in partitions})
    return [_signed32(zlib.crc32(f"{table.fullname}:{slot}".encode())) for slot in slots]


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def create_outbox_and_inbox(op: Any, schema: str) -> None:
    """Alembic helper: create the outbox and the inbox as first created, in a service's schema.

    Later revisions change both (:func:`retain_published_outbox_rows`, :func:`inbox_by_batch`).
    """
    metadata = sa.MetaData(schema=schema)
    bind = op.get_bind()
    sa.Table("outbox", metadata, *_outbox_columns()).create(bind)
    _first_inbox_table(metadata).create(bind)


def inbox_by_batch(op: Any, schema: str) -> None:
    """Alembic helper: the inbox as one row per applied batch (:func:`inbox_table`), ids kept.

    Every id applied before the upgrade is carried over (in rows of :data:`INBOX_CHUNK` ids, the
    latest ``applied_at`` of each), so nothing is applied again after it.
    """
    inbox_table(sa.MetaData(schema=schema)).create(op.get_bind())
    op.execute(
        f"""
        insert into {schema}.{INBOX_TABLE} (event_ids, applied_at)
        select array_agg(event_id order by n), max(applied_at)
        from (
            select event_id, applied_at, row_number() over (order by applied_at, event_id) - 1 as n
            from {schema}.inbox
        ) as applied
        group by n / {INBOX_CHUNK}
        order by n / {INBOX_CHUNK}
        """
    )
    op.drop_table("inbox", schema=schema)


def inbox_by_event(op: Any, schema: str) -> None:
    """Alembic helper: undo :func:`inbox_by_batch`, one row per applied id again (its batch's time)."""
    _first_inbox_table(sa.MetaData(schema=schema)).create(op.get_bind())
    op.execute(
        f"""
        insert into {schema}.inbox (event_id, applied_at)
        select u.event_id, min(b.applied_at)
        from {schema}.{INBOX_TABLE} as b cross join lateral unnest(b.event_ids) as u(event_id)
        group by u.event_id
        """
    )
    op.execute(_drop_inbox_record_function(schema))
    op.drop_table(INBOX_TABLE, schema=schema)


def _create_stamp_indexes(op: Any, schema: str) -> None:
    """The stamping relay's indexes: the waiting rows apart (partial), the published ones by stamp."""
    op.create_index(
        OUTBOX_UNPUBLISHED_INDEX,
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at is null"),
    )
    op.create_index(OUTBOX_PUBLISHED_INDEX, "outbox", ["published_at", "id"], schema=schema)


def retain_published_outbox_rows(op: Any, schema: str) -> None:
    """Alembic helper: published rows are kept (``published_at``), unpublished ones indexed apart.

    Rows present at upgrade time are still waiting (published rows used to be deleted).
    """
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True)), schema=schema)
    _create_stamp_indexes(op, schema)


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
        f"update {schema}.outbox o set published_at = o.created_at from {relay_state_sql(schema)} s "
        f"where {PUBLISHED_BY_STATE}"
    )
    _create_stamp_indexes(op, schema)
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
