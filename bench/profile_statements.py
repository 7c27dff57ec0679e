"""Where PostgreSQL's time and writes go per hazard: the end-to-end stack under maximum load, profiled.

``python -m bench.profile_statements [--duration 30]`` starts the same system as the end-to-end
benchmark with ``pg_stat_statements`` loaded, offers as much as intake accepts for ``--duration``
seconds, waits until dispatch and reporting have every hazard, and writes
``bench/results/profile_statements.json`` and ``.md``:

* the statements by total execution time: calls, rows and milliseconds per accepted hazard, and
  each one's share of all statement time;
* rows inserted, updated and deleted per accepted hazard, by table, and whether updates were HOT.

With ``--python``, every service also runs under cProfile (``HAZARD_PROFILE_DIR``, see
:mod:`shared.runner`) and the report lists each service's functions by their own CPU time
(``bench/results/profile_python.md``); cProfile roughly doubles the cost of Python calls, so the
shares, not the times, are what to read.

It is a profile, not a figure of merit: the extension's own bookkeeping costs a little CPU, so
quote throughput from ``make bench``, and read this for where the work is.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import httpx

from bench._stack import RESULTS
from bench.end_to_end import THROUGHPUT_MIX, ReportingPoller, _drain
from bench.loadgen import LoadGenerator
from tests.support.oracles import TopicFollower

PG_SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.max": "5000",
    "track_io_timing": "on",
}


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        await conn.execute("SELECT pg_stat_reset()")
    finally:
        await conn.close()


async def _collect(dsn: str, hazards: int, top: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        total_ms = float(await conn.fetchval("SELECT sum(total_exec_time) FROM pg_stat_statements") or 0.0)
        statements = await conn.fetch(
            """
            SELECT query, calls, rows, total_exec_time, shared_blks_hit + shared_blks_read AS blocks
              FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1
            """,
            top,
        )
        tables = await conn.fetch(
            """
            SELECT schemaname || '.' || relname AS name, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
              FROM pg_stat_user_tables
             WHERE n_tup_ins + n_tup_upd + n_tup_del > 0
             ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC
            """
        )
        indexes = await conn.fetch(
            """
            SELECT schemaname || '.' || relname AS tab, indexrelname AS idx, idx_scan
              FROM pg_stat_user_indexes ORDER BY schemaname, relname, indexrelname
            """
        )
    finally:
        await conn.close()
    n = max(1, hazards)
    return {
        "hazards": hazards,
        "statement_ms_per_hazard": round(total_ms / n, 4),
        "statements": [
            {
                "query": " ".join(str(row["query"]).split())[:400],
                "calls_per_hazard": round(row["calls"] / n, 3),
                "rows_per_call": round(row["rows"] / max(1, row["calls"]), 1),
                "ms_per_hazard": round(row["total_exec_time"] / n, 4),
                "share": round(row["total_exec_time"] / total_ms, 4) if total_ms else 0.0,
                "blocks_per_call": round(row["blocks"] / max(1, row["calls"]), 1),
            }
            for row in statements
        ],
        "tables": [
            {
                "table": row["name"],
                "inserted": round(row["n_tup_ins"] / n, 3),
                "updated": round(row["n_tup_upd"] / n, 3),
                "hot_updated": round(row["n_tup_hot_upd"] / n, 3),
                "deleted": round(row["n_tup_del"] / n, 3),
            }
            for row in tables
        ],
        "rows_written_per_hazard": round(
            sum(row["n_tup_ins"] + row["n_tup_upd"] + row["n_tup_del"] for row in tables) / n, 2
        ),
        "unused_indexes": [f"{row['tab']}.{row['idx']}" for row in indexes if row["idx_scan"] == 0],
    }


async def _load(system: Any, duration_s: float, concurrency: int, top: int) -> dict[str, Any]:
    follower = TopicFollower(system.bootstrap_servers, system.lifecycle_topic)
    await follower.start()
    try:
        generator = LoadGenerator(
            intake=system.url("intake"),
            principals=system.principals,
            reference=system.reference,
            seed=11,
            concurrency=concurrency,
            behaviour=THROUGHPUT_MIX,
            timeout_s=120.0,
        )
        await _reset(system.postgres.dsn())
        async with httpx.AsyncClient(timeout=30) as client:
            poller = ReportingPoller(
                client, system.url("reporting"), system.principal("supervisor"), interval_s=1.0
            )
            await poller.begin()
            try:
                await generator.run_max(duration_s=duration_s, chunk=1000)
                await _drain(follower, generator, poller, timeout_s=600.0)
            finally:
                await poller.stop()
        await asyncio.sleep(1.5)  # table counters are published about once a second
        return await _collect(system.postgres.dsn(), len(generator.result.accepted), top)
    finally:
        await follower.stop()


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Where PostgreSQL's time and writes go, per hazard",
        "",
        f"Command: `python -m bench.profile_statements --duration {result['duration_s']:.0f}`; "
        f"{result['hazards']:,} hazards accepted; statement time {result['statement_ms_per_hazard']} ms "
        f"per hazard; {result['rows_written_per_hazard']} rows written per hazard.",
        "",
        "| share | ms/hazard | calls/hazard | rows/call | statement |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for s in result["statements"]:
        query = s["query"].replace("|", "\\|")[:220]
        lines.append(
            f"| {s['share']:.1%} | {s['ms_per_hazard']} | {s['calls_per_hazard']} | {s['rows_per_call']} "
            f"| `{query}` |"
        )
    lines += ["", "| table | inserted | updated (HOT) | deleted |", "| --- | ---: | ---: | ---: |"]
    for t in result["tables"]:
        lines.append(
            f"| {t['table']} | {t['inserted']} | {t['updated']} ({t['hot_updated']}) | {t['deleted']} |"
        )
    lines += ["", "Indexes never scanned during the run: " + (", ".join(result["unused_indexes"]) or "none")]
    return "\n".join(lines) + "\n"


def python_profile(profile_dir: Path, services: tuple[str, ...], top: int) -> str:
    """Each service's functions by own CPU time (tottime), as Markdown."""
    lines = ["# Where each service's Python time goes (cProfile, own time)", ""]
    for name in services:
        path = profile_dir / f"{name}.prof"
        if not path.is_file():
            lines += [f"## {name}", "", "no profile written (the service did not stop cleanly)", ""]
            continue
        stats = pstats.Stats(str(path), stream=io.StringIO())
        entries = stats.stats  # type: ignore[attr-defined]
        total = sum(tt for (_cc, _nc, tt, _ct, _callers) in entries.values()) or 1.0
        ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
        lines += [
            f"## {name} ({total:.1f} s of own time in all)",
            "",
            "| share | own s | calls | function |",
            "| ---: | ---: | ---: | --- |",
        ]
        for (filename, line, func), (_cc, calls, tt, _ct, _callers) in ranked:
            where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
            lines.append(f"| {tt / total:.1%} | {tt:.2f} | {calls:,} | `{func}` {where}:{line} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of maximum-throughput load")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--top", type=int, default=30, help="statements (and functions) listed")
    parser.add_argument("--python", action="store_true", help="also profile each service's Python (cProfile)")
    args = parser.parse_args()
    from shared.runner import PROFILE_DIR_ENV
    from tests.support.system import SERVICES, System

    profile_dir = Path(tempfile.mkdtemp(prefix="hazard-profile-"))
    if args.python:
        os.environ[PROFILE_DIR_ENV] = str(profile_dir)  # the services inherit it (not prefixed)
    system = System(services=SERVICES, proxy=False, pg_settings=PG_SETTINGS)
    started = time.time()
    system.start()
    try:
        result = asyncio.run(_load(system, args.duration, args.concurrency, args.top))
    finally:
        system.stop()
    result["duration_s"] = args.duration
    result["took_s"] = round(time.time() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_statements.json").write_text(json.dumps(result, indent=1))
    text = _markdown(result)
    (RESULTS / "profile_statements.md").write_text(text)
    print(text)
    if args.python:
        python_text = python_profile(profile_dir, tuple(SERVICES), args.top)
        (RESULTS / "profile_python.md").write_text(python_text)
        print(python_text)


if __name__ == "__main__":
    main()
