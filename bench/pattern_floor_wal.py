"""The pattern floor (:mod:`bench.pattern_floor`) with what each phase wrote: WAL bytes and rows per event.

Each phase is bracketed by PostgreSQL's WAL position and the cumulative row counters of the
benchmark's schemas (``floor_*``: inbox, outbox and, since #20, the relay's state row), so a
change to the outbox shows as rows and WAL per published event next to its CPU. The figures of
the underlying benchmark are unchanged; the result is written to ``--out`` (never to
``bench/results/pattern_floor.json``), so runs at two commits can be interleaved:

    python -m bench.pattern_floor_wal --events 50000 --out bench/results/<name>.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import asyncpg

from bench import pattern_floor
from bench._stack import private_stack
from shared.devstack import LocalKafka, LocalPostgres

_ROWS = (
    "select relname, sum(n_tup_ins)::bigint, sum(n_tup_upd)::bigint, sum(n_tup_hot_upd)::bigint, "
    "sum(n_tup_del)::bigint from pg_stat_user_tables where schemaname like 'floor_%' group by relname"
)
# Backends report their counters at most once a second and when they exit.
_STATS_SETTLE_S = 2.0


async def _written(postgres: LocalPostgres) -> tuple[int, dict[str, dict[str, int]]]:
    connection = await asyncpg.connect(postgres.dsn())
    try:
        wal = int(await connection.fetchval("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
        rows = {
            name: {"inserted": ins, "updated": upd, "hot_updated": hot, "deleted": dele}
            for name, ins, upd, hot, dele in await connection.fetch(_ROWS)
        }
    finally:
        await connection.close()
    return wal, rows


def _measured_phase(original: Any) -> Any:
    async def phase(
        kafka: LocalKafka, postgres: LocalPostgres, *, n: int, publish: bool, meter_parts: Any
    ) -> dict[str, Any]:
        wal0, rows0 = await _written(postgres)
        result: dict[str, Any] = await original(
            kafka, postgres, n=n, publish=publish, meter_parts=meter_parts
        )
        await asyncio.sleep(_STATS_SETTLE_S)
        wal1, rows1 = await _written(postgres)
        result["wal_bytes_per_event"] = round((wal1 - wal0) / n, 1)
        result["rows_per_event"] = {
            table: {
                kind: round((count - rows0.get(table, {}).get(kind, 0)) / n, 3)
                for kind, count in counts.items()
            }
            for table, counts in rows1.items()
        }
        result["rows_written_per_event"] = round(
            sum(v["inserted"] + v["updated"] + v["deleted"] for v in result["rows_per_event"].values()), 3
        )
        return result

    return phase


def main(argv: list[str] | None = None) -> int:
    """Run both phases of the pattern floor with the writes measured; print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pattern_floor_wal", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    pattern_floor._phase = _measured_phase(pattern_floor._phase)
    with private_stack("pattern_floor_wal") as (postgres, kafka):
        result = asyncio.run(pattern_floor.run(kafka, postgres, events=args.events))
    consume, both = result["consume"], result["consume_and_publish"]
    result["wal_bytes_per_published_event"] = round(
        both["wal_bytes_per_event"] - consume["wal_bytes_per_event"], 1
    )
    result["rows_written_per_published_event"] = round(
        both["rows_written_per_event"] - consume["rows_written_per_event"], 3
    )
    result["machine"] = {"cpus": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    print(pattern_floor.table(result))
    print(
        f"WAL bytes per event: applied {consume['wal_bytes_per_event']}, applied and published "
        f"{both['wal_bytes_per_event']}, per published event {result['wal_bytes_per_published_event']}"
    )
    print(f"rows per event (applied and published): {json.dumps(both['rows_per_event'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
