"""Rows and WAL bytes dispatch writes per dispatch for its deadlines: creating, acknowledging, firing (#20).

Load-independent: counted from ``pg_stat_user_tables`` (rows inserted / updated / deleted per
table of the ``dispatch`` schema, the outbox left out) and ``pg_current_wal_lsn()`` around each
phase, on a private PostgreSQL with only the dispatch schema:

1. create ``--dispatches`` pending dispatches, 200 to a transaction (as the consumer's batches do),
   with deadlines a day ahead;
2. acknowledge half of them, one transaction each (the desk's acknowledgement);
3. bring the other half's receipt deadline (and the level-1 reminder due with it) to a minute ago
   and let timer passes fire them (``hazard.receipt_overdue`` and ``hazard.escalated`` level 1).

``python -m bench.dispatch_timer_rows [--dispatches N]``; written to
``bench/results/dispatch_timer_rows.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from bench._stack import private_postgres, publish_results
from services.dispatch import domain, service, tables, timers
from services.dispatch.repository import DispatchRepository
from shared.auth import Principal
from shared.db import create_engine, create_session_factory
from shared.migrate import migrate
from shared.outbox import Outbox
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings
from shared.uow import UnitOfWorkFactory

_STATS = sa.text(
    "select relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del from pg_stat_user_tables "
    "where schemaname = 'dispatch' and relname <> 'outbox'"
)
# The deadline and the level-1 reminder due with it, moved to a minute ago in place.
_MAKE_DUE = sa.text(
    """
    update dispatch.dispatches
    set receipt_deadline = now() - interval '1 minute', next_due_at = now() - interval '1 minute',
        escalation = (
            select jsonb_agg(
                case when (s ->> 'level')::int = 1
                     then jsonb_set(s, '{due_at}', to_jsonb(now() - interval '1 minute')) else s end
                order by (s ->> 'level')::int
            )
            from jsonb_array_elements(escalation) s
        )
    where dispatch_id = any(cast(:ids as uuid[]))
    """
)

Snapshot = tuple[dict[str, tuple[int, ...]], int]


async def _snapshot(url: str) -> Snapshot:
    """The dispatch tables' row counters and the WAL position, once every session flushed its counters."""
    await asyncio.sleep(1.2)  # a backend reports its counters at most once a second
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.connect() as conn:
            rows = {r[0]: tuple(int(x) for x in r[1:]) for r in await conn.execute(_STATS)}
            # Bytes from the start of the WAL (asyncpg reads a pg_lsn as that number).
            lsn = int((await conn.execute(sa.text("select pg_current_wal_lsn()"))).scalar_one())
    finally:
        await engine.dispose()
    return rows, lsn


async def _since(url: str, before: Snapshot, per: int) -> dict[str, Any]:
    """Rows per dispatch by table (inserted, updated, of those HOT, deleted) and WAL bytes since `before`."""
    rows, lsn = await _snapshot(url)
    wal = lsn - before[1]
    tables_written: dict[str, dict[str, float]] = {}
    for table, now in rows.items():
        then = before[0].get(table, (0, 0, 0, 0))
        moved = [round((a - b) / per, 3) for a, b in zip(now, then, strict=True)]
        if any(moved):
            tables_written[table] = dict(zip(("inserted", "updated", "hot", "deleted"), moved, strict=True))
    total = sum(v["inserted"] + v["updated"] + v["deleted"] for v in tables_written.values())
    return {"rows": round(total, 3), "wal_bytes": round(float(wal) / per), "by_table": tables_written}


async def _in_sessions(url: str, step: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `step` on sessions of an engine of its own, disposed after: a backend reports its row counters
    when it exits (an idle one only some seconds later), so the next snapshot sees them all."""
    engine = create_engine(DatabaseSettings(url=url, pool_size=5))
    try:
        return await step(create_session_factory(engine))
    finally:
        await engine.dispose()


async def run(url: str, count: int) -> dict[str, Any]:
    """The three phases on a fresh dispatch schema."""
    await migrate(url, services=("dispatch",), service_roles=False, admin=False)
    reference = load_reference_data()
    outbox = Outbox(tables.outbox, default_topic="rows")
    result: dict[str, Any] = {"dispatches": count}

    async def database_now(sessions: Any) -> Any:
        async with sessions() as session:
            return (await session.execute(sa.text("select now()"))).scalar_one()

    now = await _in_sessions(url, database_now)
    new = [
        domain.dispatch_to(
            reference,
            domain.HazardFacts(uuid.uuid4(), "locked_rooftop_door", "liuyue", "liuyue-01"),
            department_id="fire",
            rule_id="r-locked-rooftop-door",
            now=now,
            reason="routed",
            causation_id=None,
        ).dispatches[0]
        for _ in range(count)
    ]
    ids = [x.dispatch_id for x in new]
    acknowledged, due = ids[: count // 2], ids[count // 2 :]

    async def create(sessions: Any) -> None:
        for start in range(0, count, 200):
            async with sessions() as session, session.begin():
                await DispatchRepository(session).add_dispatches(
                    new[start : start + 200], dispatched_by="system"
                )

    async def acknowledge(sessions: Any) -> None:
        fire = Principal("dept-fire", "department", None, "fire")
        work = UnitOfWorkFactory(sessions, outbox, DispatchRepository)
        for dispatch_id in acknowledged:
            async with work() as uow:
                await service.acknowledge_dispatch(uow, dispatch_id, principal=fire)

    async def make_due(sessions: Any) -> None:
        async with sessions() as session, session.begin():
            await session.execute(_MAKE_DUE, {"ids": due})

    async def sweep(sessions: Any) -> int:
        return await timers.sweep(UnitOfWorkFactory(sessions, outbox, DispatchRepository), batch_size=100)

    before = await _snapshot(url)
    await _in_sessions(url, create)
    result["create"] = await _since(url, before, count)
    before = await _snapshot(url)
    await _in_sessions(url, acknowledge)
    result["acknowledge"] = await _since(url, before, len(acknowledged))
    await _in_sessions(url, make_due)
    before = await _snapshot(url)
    result["claimed_dispatches"] = await _in_sessions(url, sweep)
    result["fire_receipt_and_level_1"] = await _since(url, before, len(due))
    return result


def main() -> None:
    """Run on a private PostgreSQL and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatch_timer_rows", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dispatches", type=int, default=2000)
    args = parser.parse_args()
    with private_postgres("dispatch_timer_rows") as postgres:
        result = asyncio.run(run(postgres.url(), args.dispatches))
    lines = [
        "| phase | rows written per dispatch | WAL bytes per dispatch |",
        "| --- | ---: | ---: |",
        *(
            f"| {phase} | {result[phase]['rows']} | {result[phase]['wal_bytes']:,} |"
            for phase in ("create", "acknowledge", "fire_receipt_and_level_1")
        ),
    ]
    publish_results("dispatch_timer_rows", result, "\n".join(lines))


if __name__ == "__main__":
    main()
