"""Migrations <service>_00NN (#20) on a database at the previous head, and back: the outbox publishes by
snapshot (a transaction id per row, one relay state row) instead of stamping ``published_at``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from shared.db import create_engine, create_session_factory, outbox_table
from shared.migrate import alembic_config, migrate
from shared.outbox import Outbox, OutboxRelay, OutgoingMessage
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

# service: (previous head, this migration)
REVISIONS = {
    "intake": ("intake_0014", "intake_0015"),
    "dispatch": ("dispatch_0008", "dispatch_0009"),
    "tracking": ("tracking_0009", "tracking_0010"),
    "reporting": ("reporting_0015", "reporting_0016"),
    "notifications": ("notifications_0009", "notifications_0010"),
}


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self.sent.extend(m.headers["event_id"] for m in messages)


def _stage(schema: str, event_id: uuid.UUID, *, published: bool) -> sa.TextClause:
    stamp = "now() - interval '1 hour'" if published else "null"
    columns = "event_id, topic, key, value, headers" + (", published_at" if published else "")
    values = f"'{event_id}', 'life', 'k', '\\x00', '{{\"event_id\": \"{event_id}\"}}'"
    return sa.text(
        f"insert into {schema}.outbox ({columns}) values ({values}{', ' + stamp if published else ''})"
    )


async def _columns(engine: Any, schema: str) -> dict[str, str]:
    query = sa.text(
        "select column_name, data_type from information_schema.columns "
        f"where table_schema = '{schema}' and table_name = 'outbox'"
    )
    async with engine.begin() as conn:
        return {str(row[0]): str(row[1]) for row in await conn.execute(query)}


async def _indexes(engine: Any, schema: str) -> dict[str, str]:
    query = sa.text(
        f"select indexname, indexdef from pg_indexes where schemaname = '{schema}' and tablename = 'outbox'"
    )
    async with engine.begin() as conn:
        return {name: definition.split(" USING ", 1)[1] for name, definition in await conn.execute(query)}


@pytest.mark.parametrize("service", sorted(REVISIONS))
async def test_the_outbox_moves_to_snapshots_publishing_only_the_waiting_rows_and_back(
    service: str, database_factory: Any
) -> None:
    previous, _ = REVISIONS[service]
    url = await database_factory(template=None, prefix=f"{service}_obmig")
    await migrate(url, services=(service,), revision=previous, service_roles=False, admin=False)
    engine = create_engine(DatabaseSettings(url=url))
    published, waiting, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        columns_before, indexes_before = await _columns(engine, service), await _indexes(engine, service)
        async with engine.begin() as conn:
            await conn.execute(_stage(service, published, published=True))
            await conn.execute(_stage(service, waiting, published=False))
        await migrate(url, services=(service,), service_roles=False, admin=False)

        columns = await _columns(engine, service)
        assert "published_at" not in columns
        assert columns["xid"] == "xid8"
        indexes = await _indexes(engine, service)
        assert set(indexes) == {"outbox_pkey", "outbox_event_id_key", "outbox_xid", "outbox_created_at"}
        sessions = create_session_factory(engine)
        table = outbox_table(sa.MetaData(schema=service))
        sender = _Recorder()
        relay = OutboxRelay(table=table, sessions=sessions, sender=sender, service=service)
        async with sessions() as session:
            assert await Outbox(table, default_topic="life").pending(session) == 1
        await relay.drain()
        assert sender.sent == [str(waiting)], "the row published before the migration is not sent again"
        async with engine.begin() as conn:
            await conn.execute(_stage(service, later, published=False))  # written, not yet relayed

        def downgrade(connection: sa.Connection) -> None:
            command.downgrade(alembic_config(service, connection), previous)

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        assert await _columns(engine, service) == columns_before
        assert await _indexes(engine, service) == indexes_before
        async with engine.begin() as conn:
            stamps = dict(
                (
                    await conn.execute(
                        sa.text(f"select event_id::text, published_at = created_at from {service}.outbox")
                    )
                ).all()
            )
        assert stamps == {str(published): True, str(waiting): True, str(later): None}
    finally:
        await engine.dispose()
