"""The inbox's statements per batch, by index variant: GIN with or without its pending list (#20).

The consumer's inbox (``shared.db.inbox_table``) is one row per applied batch with the batch's
event ids in a GIN-indexed array; each batch looks its ids up (``event_ids && :ids``) and inserts
one row. A GIN index can take new entries into a pending list (``fastupdate = on``, the default)
and merge them into the index later; but every lookup then scans the whole pending list. This
measures, on a private PostgreSQL (fsync on), with the consumer's own statements:

* ``off``: ``fastupdate = off``, every entry goes straight into the index;
* ``on-64kB``: ``fastupdate = on`` with the smallest pending list (``gin_pending_list_limit = 64``);
* ``on-4MB``: the defaults;
* ``rows``: the inbox as it was (a row and a primary-key entry per event), for reference.

For each variant, round-robin so that a busy machine slows them alike: ``--batches`` batches of
``--size`` fresh ids (each batch also repeats ``--seen`` ids of the previous batch, as a
redelivery would), each in its own transaction, after ``--prefill`` ids already recorded. It
reports the server's time per batch for the lookup and insert (the median of ``--repeats``),
WAL bytes per event and the inbox's size per event.

    flock /tmp/hazard-bench.lock .venv/bin/python -m bench.inbox_index   # about 2 minutes

Printed and written to ``bench/results/<--name>.json`` (default ``inbox_index``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from bench._stack import private_postgres, publish_results
from shared.db import INBOX_LOCK_CLASS, inbox_lock_keys, inbox_record_function, inbox_record_sql, inbox_table

VARIANTS = ("off", "on-64kB", "on-4MB", "rows")


def _record(schema: str) -> str:
    """The consumer's statement (``shared.db.inbox_record_sql``) for an inbox in ``schema``, as asyncpg text."""
    text = str(inbox_record_sql(inbox_table(sa.MetaData(schema=schema))))
    return text.replace(":lock_class", "$1").replace(":lock_keys", "$2").replace(":ids", "$3")


async def _create(conn: Any, variant: str) -> None:
    schema = f"v_{variant.replace('-', '_').lower()}"
    await conn.execute(f"create schema {schema}")
    if variant == "rows":
        await conn.execute(
            f"create table {schema}.inbox (event_id uuid primary key, applied_at timestamptz not null default now())"
        )
        return
    options = {
        "off": "fastupdate = off",
        "on-64kB": "fastupdate = on, gin_pending_list_limit = 64",
        "on-4MB": "fastupdate = on",
    }[variant]
    table = inbox_table(sa.MetaData(schema=schema))
    await conn.execute(str(CreateTable(table).compile(dialect=postgresql.dialect())))  # type: ignore[no-untyped-call]
    await conn.execute(inbox_record_function(table))
    await conn.execute(f"create index on {schema}.inbox_batches using gin (event_ids) with ({options})")


async def _prefill(conn: Any, variant: str, n: int, size: int) -> None:
    schema = f"v_{variant.replace('-', '_').lower()}"
    if variant == "rows":
        await conn.execute(
            f"insert into {schema}.inbox (event_id) select gen_random_uuid() from generate_series(1, $1)", n
        )
    else:
        await conn.execute(
            f"insert into {schema}.inbox_batches (event_ids) "
            "select array(select gen_random_uuid() from generate_series(1, $2) where r > 0) "
            "from generate_series(1, $1) as r",
            n // size,
            size,
        )
    await conn.execute(f"vacuum analyze {schema}.{'inbox' if variant == 'rows' else 'inbox_batches'}")


_OLD = (
    "INSERT INTO {schema}.inbox (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING "
    "RETURNING event_id, clock_timestamp()"
)


async def _batches(conn: Any, variant: str, *, batches: int, size: int, seen: int) -> dict[str, float]:
    schema = f"v_{variant.replace('-', '_').lower()}"
    table = "inbox" if variant == "rows" else "inbox_batches"
    record = _record(schema)
    keys = inbox_lock_keys(inbox_table(sa.MetaData(schema=schema)), [0])
    wal0 = await conn.fetchval("select pg_current_wal_lsn() - '0/0'::pg_lsn")
    size0 = await conn.fetchval("select pg_total_relation_size($1::regclass)", f"{schema}.{table}")
    previous: list[uuid.UUID] = []
    spent = 0.0
    for _ in range(batches):
        ids = [*previous[:seen], *(uuid.uuid4() for _ in range(size))]
        async with conn.transaction():
            started = time.perf_counter()
            if variant == "rows":
                await conn.fetch(_OLD.format(schema=schema), ids)
            else:
                await conn.fetchrow(record, INBOX_LOCK_CLASS, keys, ids)
            spent += time.perf_counter() - started
        previous = ids[seen:]
    wal1 = await conn.fetchval("select pg_current_wal_lsn() - '0/0'::pg_lsn")
    size1 = await conn.fetchval("select pg_total_relation_size($1::regclass)", f"{schema}.{table}")
    events = batches * size
    return {
        "ms_per_batch": spent * 1000 / batches,
        "wal_bytes_per_event": (int(wal1) - int(wal0)) / events,
        "bytes_per_event": (int(size1) - int(size0)) / events,
    }


async def run(dsn: str, *, prefill: int, batches: int, size: int, seen: int, repeats: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        for variant in VARIANTS:
            await _create(conn, variant)
            await _prefill(conn, variant, prefill, size)
        samples: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for _ in range(repeats):
            for variant in VARIANTS:
                samples[variant].append(await _batches(conn, variant, batches=batches, size=size, seen=seen))
    finally:
        await conn.close()
    return {
        "settings": {"prefill": prefill, "batches": batches, "size": size, "seen": seen, "repeats": repeats},
        "variants": {
            v: {k: round(statistics.median(s[k] for s in samples[v]), 3) for k in samples[v][0]}
            for v in VARIANTS
        },
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    lines = [
        "| inbox | ms per batch (lookup + insert) | WAL bytes per event | bytes on disk per event |",
        "| --- | ---: | ---: | ---: |",
    ]
    for variant, f in result["variants"].items():
        lines.append(
            f"| {variant} | {f['ms_per_batch']:.3f} | {f['wal_bytes_per_event']:.0f} | {f['bytes_per_event']:.0f} |"
        )
    s = result["settings"]
    lines.append("")
    lines.append(
        f"{s['batches']} batches of {s['size']} new ids (+{s['seen']} seen) per repeat, after {s['prefill']:,} ids; "
        f"median of {s['repeats']} repeats."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL, measure every variant, print and write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_index", description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--seen", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="inbox_index")
    args = parser.parse_args(argv)
    with private_postgres("inbox_index") as postgres:
        dsn = postgres.url().replace("postgresql+asyncpg://", "postgresql://")
        result = asyncio.run(
            run(
                dsn,
                prefill=args.prefill,
                batches=args.batches,
                size=args.size,
                seen=args.seen,
                repeats=args.repeats,
            )
        )
    publish_results(args.name, result, table(result), note="shared machine; ms per batch is load-dependent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
