"""Migration tracking_0008 (#20) on a database at tracking_0007, and back: one timeline index in place of
two, room on the case pages."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from shared.db import create_engine
from shared.migrate import alembic_config, migrate
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

_INDEXES = sa.text(
    "select indexname, indexdef from pg_indexes where schemaname = 'tracking' and tablename = 'timeline'"
)
_ENTRY = sa.text(
    "insert into tracking.timeline (hazard_id, event_id, event_type, occurred_at, producer, actor, payload) "
    "values ('6f1c1e1e-0000-4000-8000-000000000001', '6f1c1e1e-0000-4000-8000-0000000000e1', "
    "'hazard.reported', now(), 'intake', 'gm-1', '{}') on conflict (hazard_id, event_id) do nothing"
)


_OPTIONS = sa.text("select reloptions from pg_class where oid = 'tracking.cases'::regclass")


async def _indexes(engine: Any) -> dict[str, str]:
    async with engine.begin() as conn:
        return {name: definition.split(" USING ", 1)[1] for name, definition in await conn.execute(_INDEXES)}


async def _case_options(engine: Any) -> list[str] | None:
    async with engine.begin() as conn:
        options: list[str] | None = (await conn.execute(_OPTIONS)).scalar_one()
    return options


async def test_0008_makes_hazard_and_event_the_timelines_one_key_leaves_room_for_cases_and_back(
    database_factory: Any,
) -> None:
    url = await database_factory(template=None, prefix="tracking_mig")
    await migrate(url, services=("tracking",), revision="tracking_0007", service_roles=False, admin=False)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        before = await _indexes(engine)
        assert set(before) == {"timeline_pkey", "timeline_event_id_key", "ix_timeline_hazard"}
        assert await _case_options(engine) is None
        await migrate(url, services=("tracking",), service_roles=False, admin=False)
        assert await _indexes(engine) == {
            "timeline_pkey": "btree (seq)",
            "timeline_hazard_event": "btree (hazard_id, event_id)",
        }
        assert await _case_options(engine) == ["fillfactor=90"]
        async with engine.begin() as conn:
            # The statement the consumer uses: the same event twice is kept once.
            inserted = [(await conn.execute(_ENTRY)).rowcount for _ in range(2)]
        assert inserted == [1, 0]

        def downgrade(connection: sa.Connection) -> None:
            command.downgrade(alembic_config("tracking", connection), "tracking_0007")

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        assert await _indexes(engine) == before
        assert await _case_options(engine) is None
    finally:
        await engine.dispose()
