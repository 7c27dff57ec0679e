"""Migrations <service>_00NN "inbox by batch" (#20) from each service's previous head with ids in its
inbox, and back: every applied id is kept, so nothing applied before the upgrade is applied again."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from shared.consumer import BatchContext, EventConsumer
from shared.db import INBOX_CHUNK, INBOX_INDEX_OPTIONS, create_engine, create_session_factory
from shared.events import LifecycleEvent
from shared.migrate import alembic_config, migrate
from shared.outbox import Outbox, OutgoingMessage
from shared.settings import DatabaseSettings
from tests.support.factories import make_event
from tests.support.kafka_tools import consumed_records

pytestmark = pytest.mark.integration

# (service, the revision before, the revision making the inbox one row per batch)
REVISIONS = (
    ("intake", "intake_0013", "intake_0014"),
    ("dispatch", "dispatch_0007", "dispatch_0008"),
    ("tracking", "tracking_0008", "tracking_0009"),
    ("reporting", "reporting_0014", "reporting_0015"),
    ("notifications", "notifications_0007", "notifications_0009"),
)
APPLIED = 2 * INBOX_CHUNK + 500
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


class _Sender:
    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        raise AssertionError("nothing is dead-lettered here")


async def _old_rows(engine: Any, schema: str) -> dict[uuid.UUID, datetime]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text(f"select event_id, applied_at from {schema}.inbox"))
        return {row.event_id: row.applied_at for row in rows}


@pytest.mark.parametrize(("service", "before", "revision"), REVISIONS)
async def test_the_inbox_by_batch_keeps_every_applied_id_up_and_down(
    database_factory: Any, service: str, before: str, revision: str
) -> None:
    url = await database_factory(template=None, prefix=f"{service}_inbox_mig")
    await migrate(url, services=(service,), revision=before, service_roles=False, admin=False)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        ids = [uuid.uuid4() for _ in range(APPLIED)]
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    f"insert into {service}.inbox (event_id, applied_at) "
                    "select id, cast(:t0 as timestamptz) + n * interval '1 second' "
                    "from unnest(cast(:ids as uuid[])) with ordinality as u(id, n)"
                ),
                {"ids": ids, "t0": T0},
            )
        before_rows = await _old_rows(engine, service)
        assert len(before_rows) == APPLIED

        await migrate(url, services=(service,), revision=revision, service_roles=False, admin=False)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text(f"select event_ids, applied_at from {service}.inbox_batches order by id")
                )
            ).all()
            index = await conn.scalar(
                sa.text(
                    "select indexdef from pg_indexes where schemaname = :s and indexname = 'inbox_batches_event_ids'"
                ),
                {"s": service},
            )
            old_gone = await conn.scalar(sa.text(f"select to_regclass('{service}.inbox') is null"))
        assert [len(r.event_ids) for r in rows] == [INBOX_CHUNK, INBOX_CHUNK, 500]
        assert sorted(i for r in rows for i in r.event_ids) == sorted(ids)
        # Each row carries the latest time of its ids, in the order they were applied.
        assert [r.applied_at for r in rows] == [
            T0 + timedelta(seconds=INBOX_CHUNK),
            T0 + timedelta(seconds=2 * INBOX_CHUNK),
            T0 + timedelta(seconds=APPLIED),
        ]
        assert index is not None
        assert "USING gin (event_ids)" in index
        assert all(f"{k}={v}" in index for k, v in INBOX_INDEX_OPTIONS.items())
        assert old_gone

        # The consumer, at the new shape, skips an event applied before the upgrade.
        inbox = importlib.import_module(f"services.{service}.tables").inbox
        outbox = importlib.import_module(f"services.{service}.tables").outbox
        calls: list[list[uuid.UUID]] = []

        async def handler(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
            calls.append([e.event_id for e in events])

        consumer = EventConsumer(
            service=f"{service}-migration-test",
            sessions=create_session_factory(engine),
            inbox=inbox,
            outbox=Outbox(outbox, default_topic="lifecycle"),
            handler=handler,
            sender=_Sender(),
            dead_letter_topic="lifecycle.dlt",
        )
        old = make_event("hazard.reported").model_copy(update={"event_id": ids[1234]})
        new = make_event("hazard.reported")
        await consumer.process(consumed_records([old, new]))
        assert calls == [[new.event_id]]

        def downgrade(connection: sa.Connection) -> None:
            command.downgrade(alembic_config(service, connection), before)

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        after = await _old_rows(engine, service)
        # One row per id again: every id kept, at its batch's time; the one applied since, too.
        assert set(after) == {*ids, new.event_id}
        assert all(after[i] >= before_rows[i] for i in ids)
    finally:
        await engine.dispose()
