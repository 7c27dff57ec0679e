"""Database engine and session factory, and the outbox/inbox tables every service schema has."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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


_DATABASE_NOW = sa.text("select clock_timestamp()")


async def database_now(session: AsyncSession) -> datetime:
    """The database server's clock, read inside the caller's unit of work.

    Every deadline decision (on time or late, due or not) is taken on this clock, never on the
    process's own: replicas whose hosts disagree on the time still reach one verdict.
    """
    now: datetime = (await session.execute(_DATABASE_NOW)).scalar_one()
    return now


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events waiting to be published, written in the same transaction as the change they describe."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


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
    outbox_table(metadata).create(bind)
    inbox_table(metadata).create(bind)
