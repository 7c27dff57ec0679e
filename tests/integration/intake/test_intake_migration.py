"""Migration intake_0013 (#20) on a database at intake_0012, and back: the report indexes and fillfactor."""

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
    "select indexname, indexdef from pg_indexes where schemaname = 'intake' and tablename = 'reports'"
)
_OPTIONS = sa.text("select reloptions from pg_class where oid = 'intake.reports'::regclass")


async def _schema(engine: Any) -> tuple[dict[str, str], list[str] | None]:
    async with engine.begin() as conn:
        indexes = {
            name: definition.split(" USING ", 1)[1] for name, definition in await conn.execute(_INDEXES)
        }
        options = (await conn.execute(_OPTIONS)).scalar_one()
    return indexes, options


async def test_0013_drops_the_undecided_index_narrows_the_duplicate_one_and_leaves_room_and_back(
    database_factory: Any,
) -> None:
    url = await database_factory(template=None, prefix="intake_mig")
    await migrate(url, services=("intake",), revision="intake_0012", service_roles=False, admin=False)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        before = await _schema(engine)
        await migrate(url, services=("intake",), service_roles=False, admin=False)
        indexes, options = await _schema(engine)
        assert set(before[0]) - set(indexes) == {"reports_undecided"}
        assert indexes["reports_duplicate_of"] == "btree (duplicate_of) WHERE (duplicate_of IS NOT NULL)"
        assert indexes["reports_requested"] == "btree (requested_datetime)"  # Open311 GET requests
        assert options == ["fillfactor=50"]

        def downgrade(connection: sa.Connection) -> None:
            command.downgrade(alembic_config("intake", connection), "intake_0012")

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        assert await _schema(engine) == before
    finally:
        await engine.dispose()
