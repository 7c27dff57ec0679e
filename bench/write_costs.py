"""What one hazard's rows cost PostgreSQL in intake and tracking, statement by statement (#20).

A focused, repeatable measurement of the writes ``bench.profile_statements`` found the largest
of intake and tracking, made the way the services make them, on a private PostgreSQL (fsync on,
``pg_stat_statements`` loaded) and no broker:

* intake: reports accepted through the real write engine (``Intake.write``: the duplicate probe,
  then the one statement inserting reports and their outbox rows), ``--chunk`` reports per
  transaction, after ``--prefill`` reports already in the table; then the Open311 view's updates
  from lifecycle events (``apply_lifecycle_events``): every open original dispatched (its first
  decision), then 90% of them acknowledged;
* tracking: a realistic mix of lifecycle events (``bench.tracking_apply.workload``) applied by the
  real use case (``service.apply_events`` on a consumer's unit of work), ``--batch`` events per
  transaction, each hazard's events spread over several batches, after ``--prefill`` events.

Each schema named by ``--schemas`` (``before``: intake_0012 and tracking_0007, the heads before
#20's indexes, with the statements of that time; ``head``) gets a fresh database per repeat, in alternating order, so a busy
machine slows both alike. Per statement it reports the server's execution time per row (the
median over ``--repeats``), and what does not depend on the machine's load: WAL bytes and
buffers touched per row, and the share of updates that were HOT.

    flock /tmp/hazard-bench.lock .venv/bin/python -m bench.write_costs  # about 3 minutes

Printed and written to ``bench/results/write_costs.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench._stack import publish_results
from bench.loadgen import BehaviourMix, ReportPlanner, make_principals
from bench.tracking_apply import workload
from services.intake import repository as intake_repo
from services.intake import service as intake_service
from services.intake import tables as intake_tables
from services.intake.domain import Policy
from services.tracking import repository as tracking_repository
from services.tracking import service as tracking_service
from services.tracking import tables as tracking_tables
from services.tracking.repository import TrackingRepository
from shared import events as ev
from shared.auth import Principal
from shared.consumer import BatchContext
from shared.db import create_session_factory, database_now
from shared.devstack import LocalPostgres, free_port
from shared.migrate import migrate
from shared.outbox import Outbox
from shared.reference import PACKAGED_DATA_DIR, ReferenceData, load_reference_data
from shared.uow import SqlUnitOfWork

PG_SETTINGS = {"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all"}
SCHEMAS: dict[str, dict[str, str]] = {
    "before": {"intake": "intake_0012", "tracking": "tracking_0007"},
    "head": {"intake": "head", "tracking": "head"},
}


def _before_statements() -> list[tuple[Any, str, Any]]:
    """(module, name, statement) of the writes as they were before #20, for the ``before`` schema."""
    insert = intake_repo._RAW_INSERT.replace(
        "    returning report_id\n), staged",
        "    on conflict (report_id) do nothing\n    returning report_id\n), staged",
    )
    entries = sa.text(
        str(tracking_repository._ADD_ENTRIES.text).replace(
            "on conflict (hazard_id, event_id) do nothing", "on conflict (event_id) do nothing"
        )
    )
    assert insert != intake_repo._RAW_INSERT
    assert str(entries.text) != str(tracking_repository._ADD_ENTRIES.text)
    return [(intake_repo, "_RAW_INSERT", insert), (tracking_repository, "_ADD_ENTRIES", entries)]


@contextlib.contextmanager
def _statements_of(schema: str) -> Iterator[None]:
    """The services' statements that go with ``schema``: today's, or those before #20 on ``before``."""
    swaps = _before_statements() if schema == "before" else []
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    for module, name, statement in swaps:
        setattr(module, name, statement)
    try:
        yield
    finally:
        for module, name, statement in saved:
            setattr(module, name, statement)


# (what, how pg_stat_statements' text starts): the statements measured.
STATEMENTS = {
    "intake_insert": "with inserted as ( insert into intake.reports",
    "intake_update": "update intake.reports r set status_notes",
    "timeline_insert": "insert into tracking.timeline",
    "cases_upsert": "insert into tracking.cases",
}

_STATS = """
select query, calls, rows, total_exec_time, shared_blks_hit + shared_blks_read as blocks,
       shared_blks_dirtied as dirtied, wal_records, wal_bytes
  from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
"""
_TABLE_WRITES = """
select coalesce(sum(n_tup_upd), 0) as upd, coalesce(sum(n_tup_hot_upd), 0) as hot
  from pg_stat_xact_user_tables where schemaname || '.' || relname = :table
"""


def _norm(text: str) -> str:
    return " ".join(text.split())


async def _statement_stats(dsn: str) -> dict[str, dict[str, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_STATS)
    finally:
        await conn.close()
    found: dict[str, dict[str, float]] = {}
    for name, prefix in STATEMENTS.items():
        for row in rows:
            if _norm(row["query"]).startswith(prefix):
                entry = found.setdefault(
                    name, dict.fromkeys(("calls", "rows", "ms", "blocks", "dirtied", "wal", "walb"), 0.0)
                )
                entry["calls"] += row["calls"]
                entry["rows"] += row["rows"]
                entry["ms"] += row["total_exec_time"]
                entry["blocks"] += row["blocks"]
                entry["dirtied"] += row["dirtied"]
                entry["wal"] += row["wal_records"]
                entry["walb"] += float(row["wal_bytes"])
    return found


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("select pg_stat_statements_reset()")
    finally:
        await conn.close()


def _per_row(stats: dict[str, float] | None, rows: int | None = None) -> dict[str, float]:
    """Per row written; ``rows`` when the statement's own count is not the rows it wrote."""
    if not stats:
        return {}
    rows = rows or int(stats["rows"])
    if not rows:
        return {}
    return {
        "us_per_row": round(stats["ms"] * 1000 / rows, 2),
        "wal_bytes_per_row": round(stats["walb"] / rows, 1),
        "wal_records_per_row": round(stats["wal"] / rows, 2),
        "blocks_per_row": round(stats["blocks"] / rows, 2),
        "dirtied_per_row": round(stats["dirtied"] / rows, 3),
        "rows_per_call": round(rows / max(1.0, stats["calls"]), 1),
    }


# ---------------------------------------------------------------- intake


def _reporters(reference: ReferenceData) -> tuple[ReportPlanner, dict[str, Principal]]:
    principals = make_principals(reference, reporters_per_grid=1)
    planner = ReportPlanner(
        reference,
        principals,
        rng=random.Random(11),
        behaviour=BehaviourMix(on_site=0.12),
        buildings_per_grid=400,  # the same buildings come back: some reports are duplicates
    )
    by_id = {
        p.principal: Principal(id=p.principal, role="reporter", grid_id=p.grid_id)
        for p in principals
        if p.role == "reporter"
    }
    return planner, by_id


async def _submit(
    intake: intake_service.Intake, planner: ReportPlanner, by_id: dict[str, Principal], n: int, chunk: int
) -> None:
    """``n`` reports, ``chunk`` per transaction, each chunk from one grid's reporter (as a batch)."""
    left = n
    while left > 0:
        size = min(chunk, left)
        grid = planner.rng.choice(planner.grids)
        planned = [planner.report(grid_id=grid) for _ in range(size)]
        principal = by_id[planned[0].reporter]
        items = [intake_service.REPORT.validate_python(p.body) for p in planned]
        results = await intake.submit(principal=principal, items=items, source="batch")
        assert all(r.outcome == "created" for r in results), [r for r in results if r.outcome != "created"][
            :1
        ]
        left -= size


def _dispatched(hazard_id: uuid.UUID, at: datetime) -> ev.HazardDispatched:
    return ev.HazardDispatched(
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=hazard_id,
        producer="dispatch",
        payload=ev.HazardDispatchedPayload(
            dispatch_id=uuid.uuid4(),
            department_id="fire",
            rule_id="bench",
            receipt_deadline=at + timedelta(hours=2),
            deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
            reason="routed",
        ),
    )


def _acknowledged(hazard_id: uuid.UUID, at: datetime) -> ev.HazardAcknowledged:
    return ev.HazardAcknowledged(
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=hazard_id,
        producer="dispatch",
        payload=ev.HazardAcknowledgedPayload(
            dispatch_id=uuid.uuid4(),
            department_id="fire",
            acknowledged_at=at,
            receipt_deadline=at,
            on_time=True,
            acknowledged_by="officer-fire",
        ),
    )


async def _apply(url: str, reference: ReferenceData, events: Sequence[Any], batch: int) -> dict[str, int]:
    """Apply lifecycle events to the Open311 view as intake's consumer does, ``batch`` per transaction."""
    engine = create_async_engine(url)
    sessions = create_session_factory(engine)
    outbox = Outbox(intake_tables.outbox, default_topic="bench-lifecycle")
    counts = {"updated": 0, "hot": 0}
    try:
        for start in range(0, len(events), batch):
            async with sessions() as session, session.begin():
                uow = SqlUnitOfWork(
                    session=session,
                    outbox=outbox,
                    now=await database_now(session),
                    repo=intake_repo.IntakeRepository(session),
                )
                await intake_service.apply_lifecycle_events(
                    uow, events[start : start + batch], reference=reference
                )
                row = (await session.execute(sa.text(_TABLE_WRITES), {"table": "intake.reports"})).one()
                counts["updated"] += int(row.upd)
                counts["hot"] += int(row.hot)
    finally:
        await engine.dispose()
    return counts


async def measure_intake(
    url: str, dsn: str, reference: ReferenceData, *, prefill: int, rows: int, chunk: int
) -> dict[str, Any]:
    """Reports inserted, then dispatched and acknowledged in the Open311 view: cost per row."""
    planner, by_id = _reporters(reference)
    pool = intake_repo.WritePool(url, max_size=2)
    intake = intake_service.Intake(
        pool=pool,
        outbox=Outbox(intake_tables.outbox, default_topic="bench-lifecycle"),
        reference=reference,
        policy=Policy(duplicate_distance_m=reference.duplicate_distance_m),
    )
    try:
        await _submit(intake, planner, by_id, prefill, 250)
        await _reset(dsn)
        await _submit(intake, planner, by_id, rows, chunk)
        inserted = await _statement_stats(dsn)
    finally:
        await pool.close()
    conn = await asyncpg.connect(dsn)
    try:
        originals = [
            r["hazard_id"]
            for r in await conn.fetch(
                "select hazard_id from intake.reports where status = 'open' and duplicate_of is null order by requested_datetime"
            )
        ]
    finally:
        await conn.close()
    at = datetime.now(UTC)
    await _reset(dsn)
    decided = await _apply(url, reference, [_dispatched(h, at) for h in originals], 170)
    decide = await _statement_stats(dsn)
    acknowledged = originals[: int(len(originals) * 0.9)]
    await _reset(dsn)
    acked = await _apply(
        url, reference, [_acknowledged(h, at + timedelta(minutes=5)) for h in acknowledged], 170
    )
    ack = await _statement_stats(dsn)
    return {
        "insert": _per_row(inserted.get("intake_insert"), rows),
        "update_decision": {
            **_per_row(decide.get("intake_update")),
            "updates": decided["updated"],
            "hot_share": round(decided["hot"] / max(1, decided["updated"]), 3),
        },
        "update_acknowledged": {
            **_per_row(ack.get("intake_update")),
            "updates": acked["updated"],
            "hot_share": round(acked["hot"] / max(1, acked["updated"]), 3),
        },
    }


# ---------------------------------------------------------------- tracking


def _spread(events: Sequence[ev.AnyEvent], lag: int) -> list[ev.AnyEvent]:
    """The events in an order where each hazard's k-th event comes ``lag`` hazards after its (k-1)-th."""
    order: dict[uuid.UUID, int] = {}
    nth: dict[uuid.UUID, int] = {}
    keyed = []
    for i, e in enumerate(events):
        h = order.setdefault(e.hazard_id, len(order))
        k = nth.get(e.hazard_id, 0)
        nth[e.hazard_id] = k + 1
        keyed.append((h + k * lag, i, e))
    return [e for _, _, e in sorted(keyed, key=lambda t: (t[0], t[1]))]


async def _apply_tracking(
    url: str, reference: ReferenceData, events: Sequence[ev.AnyEvent], batch: int
) -> dict[str, int]:
    engine = create_async_engine(url)
    sessions = create_session_factory(engine)
    outbox = Outbox(tracking_tables.outbox, default_topic="bench-lifecycle")
    config = tracking_service.TrackingConfig(reference=reference)
    counts = {"updated": 0, "hot": 0}
    try:
        for start in range(0, len(events), batch):
            async with sessions() as session, session.begin():
                ctx = BatchContext(
                    session=session,
                    outbox=outbox,
                    now=await database_now(session),
                    repo=TrackingRepository(session),
                    service="tracking",
                    dead_letter_topic="bench-dead-letters",
                )
                await tracking_service.apply_events(ctx, events[start : start + batch], config=config)
                row = (await session.execute(sa.text(_TABLE_WRITES), {"table": "tracking.cases"})).one()
                counts["updated"] += int(row.upd)
                counts["hot"] += int(row.hot)
    finally:
        await engine.dispose()
    return counts


async def measure_tracking(
    url: str, dsn: str, reference: ReferenceData, *, prefill: int, events: int, batch: int
) -> dict[str, Any]:
    """Lifecycle events applied to cases and timelines: cost per row written."""
    load = _spread(workload(prefill + events, seed=7), lag=batch // 3)
    await _apply_tracking(url, reference, load[:prefill], batch)
    await _reset(dsn)
    counts = await _apply_tracking(url, reference, load[prefill:], batch)
    stats = await _statement_stats(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        cases = await conn.fetchval("select count(*) from tracking.cases")
        entries = await conn.fetchval("select count(*) from tracking.timeline")
        payload = await conn.fetchval("select avg(pg_column_size(payload)) from tracking.timeline")
    finally:
        await conn.close()
    return {
        "timeline_insert": {
            **_per_row(stats.get("timeline_insert")),
            "payload_bytes": round(float(payload or 0), 1),
        },
        "cases_upsert": {
            **_per_row(stats.get("cases_upsert")),
            "updates": counts["updated"],
            "hot_share": round(counts["hot"] / max(1, counts["updated"]), 3),
        },
        "cases": cases,
        "timeline": entries,
    }


# ---------------------------------------------------------------- the run


async def _one(
    postgres: LocalPostgres, schema: str, n: int, reference: ReferenceData, args: argparse.Namespace
) -> dict[str, Any]:
    name = f"costs_{schema}_{n}"
    await postgres.acreate_database(name)
    url, dsn = postgres.url(name), postgres.dsn(name)
    try:
        for service, revision in SCHEMAS[schema].items():
            await migrate(url, (service,), revision, service_roles=False, admin=False)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("create extension if not exists pg_stat_statements")
        finally:
            await conn.close()
        with _statements_of(schema):
            intake = await measure_intake(
                url, dsn, reference, prefill=args.prefill, rows=args.rows, chunk=args.chunk
            )
            tracking = await measure_tracking(
                url, dsn, reference, prefill=args.prefill, events=args.events, batch=args.batch
            )
        return {"intake": intake, "tracking": tracking}
    finally:
        await postgres.adrop_database(name)


def _median(runs: list[dict[str, Any]], path: tuple[str, ...]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for run in runs:
        node: Any = run
        for key in path:
            node = node[key]
        for key, value in node.items():
            if isinstance(value, int | float):
                values.setdefault(key, []).append(float(value))
    return {key: round(statistics.median(v), 3) for key, v in values.items()}


PARTS = (
    ("intake", "insert"),
    ("intake", "update_decision"),
    ("intake", "update_acknowledged"),
    ("tracking", "timeline_insert"),
    ("tracking", "cases_upsert"),
)


async def run(postgres: LocalPostgres, args: argparse.Namespace) -> dict[str, Any]:
    """Every schema once per repeat, in alternating order; medians per schema and statement."""
    reference = load_reference_data(PACKAGED_DATA_DIR)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.schemas}
    for n in range(args.repeats):
        order = args.schemas if n % 2 == 0 else list(reversed(args.schemas))
        for schema in order:
            result = await _one(postgres, schema, n, reference, args)
            runs[schema].append(result)
            figures = ", ".join(
                f"{'.'.join(p)} {_median([result], p).get('us_per_row', 0):.1f}" for p in PARTS
            )
            print(f"repeat {n + 1}/{args.repeats} {schema} (us/row): {figures}", flush=True)
    return {
        "args": dict(vars(args)),
        "medians": {s: {".".join(p): _median(r, p) for p in PARTS} for s, r in runs.items()},
        "runs": runs,
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        "| statement | schema | us/row (median) | WAL bytes/row | WAL records/row | buffers/row | HOT share |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for part in (".".join(p) for p in PARTS):
        for schema, medians in result["medians"].items():
            m = medians[part]
            hot = f"{m['hot_share']:.0%}" if "hot_share" in m else ""
            lines.append(
                f"| {part} | {schema} | {m.get('us_per_row', 0):.1f} | {m.get('wal_bytes_per_row', 0):.0f} "
                f"| {m.get('wal_records_per_row', 0):.2f} | {m.get('blocks_per_row', 0):.1f} | {hot} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", nargs="+", default=["before", "head"], choices=sorted(SCHEMAS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--prefill", type=int, default=4_000, help="reports and events written before measuring"
    )
    parser.add_argument("--rows", type=int, default=3_000, help="reports inserted while measuring")
    parser.add_argument("--chunk", type=int, default=21, help="reports per insert (the profile's mean)")
    parser.add_argument("--events", type=int, default=4_000, help="tracking events applied while measuring")
    parser.add_argument("--batch", type=int, default=1000, help="tracking events per transaction")
    parser.add_argument("--name", default="write_costs", help="results file name (bench/results/<name>.json)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="hazard-bench-write-costs-"))
    base.chmod(0o755)  # the server runs as another OS user when we are root
    postgres = LocalPostgres(
        data_dir=base / "pg", port=free_port(), log_path=base / "pg.log", extra_settings=PG_SETTINGS
    )
    try:
        postgres.start()
        result = asyncio.run(run(postgres, args))
    finally:
        postgres.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
    publish_results(args.name, result, _table(result), note="shared 2-core machine; medians over repeats")


if __name__ == "__main__":
    main()
