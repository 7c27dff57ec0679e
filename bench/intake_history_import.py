"""History import (#18 item 2): 100,000 past records through ``POST /api/v1/imports``.

Starts the system (PostgreSQL, Tansu, intake, dispatch, tracking, reporting as processes), builds
a CSV of N records spread over the year before the run (template columns; dispatched,
acknowledged on time or late, notices, rectified, closed, some relapses) and posts it as the
operator. Measured:

* **import** — rows / s of the request (read, check every row, store the records and their
  ``hazard.imported`` events in one transaction), and its wall seconds;
* **until reporting counts them** — seconds from the request's start until the reporting
  projection holds every imported hazard (outbox relay -> topic -> reporting's consumer), and
  until ``GET /api/v1/reports/summary`` over the year answers ``reported = N``;
* re-importing the same file: its seconds, and that it imports nothing.

``python -m bench.intake_history_import [--rows N]``; run it under ``flock /tmp/hazard-bench.lock``.
Figures are printed and written to ``bench/results/intake_history_import.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from bench._stack import publish_results
from services.intake.history import COLUMNS
from shared.db import create_engine
from shared.settings import DatabaseSettings

CATEGORIES = {
    "locked_rooftop_door": "fire",
    "ebike_indoor_charging": "fire",
    "blocked_fire_passage": "fire",
    "direct_vent_water_heater": "gas",
    "public_security_hazard": "police",
    "road_hazard": "roads",
}


def build_csv(rows: int, *, grids: list[str], end: datetime, seed: int = 18) -> bytes:
    """N records over the 360 days before ``end`` (city time written without an offset)."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(COLUMNS))
    fmt = "%Y-%m-%d %H:%M"
    closed: list[str] = []
    for i in range(rows):
        observed = end - timedelta(days=360) + timedelta(minutes=rng.randrange(0, 340 * 24 * 60))
        category = rng.choice(list(CATEGORIES))
        record = f"H{i:07d}"
        dispatched = observed + timedelta(minutes=rng.randint(5, 120))
        deadline = dispatched + timedelta(hours=2)
        acknowledged = dispatched + timedelta(minutes=rng.choice((30, 60, 90, 200)))
        rectified = acknowledged + timedelta(days=rng.randint(1, 10)) if rng.random() < 0.8 else None
        closed_at = rectified + timedelta(days=1) if rectified is not None and rng.random() < 0.9 else None
        relapse = rng.choice(closed) if closed and rng.random() < 0.03 else ""
        writer.writerow(
            [
                record,
                observed.strftime(fmt),
                category,
                rng.choice(grids),
                "",
                f"Road {rng.randint(1, 300)}",
                f"B-{rng.randint(1, 2000)}",
                rng.choice(("grid_member", "grid_member", "building_manager", "hotline")),
                "import",
                "",
                "是" if rng.random() < 0.4 else "否",
                CATEGORIES[category],
                dispatched.strftime(fmt),
                acknowledged.strftime(fmt),
                deadline.strftime(fmt),
                "" if rectified is None else rectified.strftime(fmt),
                "" if closed_at is None else closed_at.strftime(fmt),
                relapse,
            ]
        )
        if closed_at is not None and not relapse:
            closed.append(record)
    return out.getvalue().encode()


async def _count(url: str) -> int:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text("select count(*) from reporting.hazards"))).scalar_one())
    finally:
        await engine.dispose()


async def measure(system: Any, rows: int) -> dict[str, Any]:
    end = datetime.now(UTC) - timedelta(days=1)
    grids = [g.id for g in system.reference.grids]
    data = build_csv(rows, grids=grids, end=end)
    operator = system.headers("operator")
    supervisor = system.headers("supervisor")
    intake, reporting = system.url("intake"), system.url("reporting")
    async with httpx.AsyncClient(timeout=1800) as client:
        started = time.monotonic()
        response = await client.post(
            f"{intake}/api/v1/imports",
            files={"file": ("history.csv", data, "text/csv")},
            data={"on_error": "refuse"},
            headers=operator,
        )
        import_s = time.monotonic() - started
        assert response.status_code == 200, response.text[:2000]
        body = response.json()
        assert body["imported"] == rows, body
        while True:
            if await _count(system.database_url) >= rows:
                break
            await asyncio.sleep(0.25)
        facts_s = time.monotonic() - started
        period = {"from": (end - timedelta(days=362)).date().isoformat(), "to": end.date().isoformat()}
        while True:
            summary = await client.get(
                f"{reporting}/api/v1/reports/summary",
                params={**period, "group_by": "category"},
                headers=supervisor,
            )
            assert summary.status_code == 200, summary.text
            if summary.json()["totals"]["reported"] == rows:
                break
            await asyncio.sleep(0.5)
        summary_s = time.monotonic() - started
        again = time.monotonic()
        second = await client.post(
            f"{intake}/api/v1/imports", files={"file": ("history.csv", data, "text/csv")}, headers=operator
        )
        reimport_s = time.monotonic() - again
        assert second.status_code == 200, second.text[:2000]
        assert (second.json()["imported"], second.json()["unchanged"]) == (0, rows)
    return {
        "rows": rows,
        "file_bytes": len(data),
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(rows / import_s),
        "until_reporting_facts_s": round(facts_s, 2),
        "until_summary_counts_s": round(summary_s, 2),
        "reimport_s": round(reimport_s, 2),
        "reimport_imported": second.json()["imported"],
        "totals": {
            k: summary.json()["totals"][k] for k in ("reported", "dispatched", "acknowledged_late", "closed")
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    from tests.support.system import System

    system = System(services=("intake", "dispatch", "tracking", "reporting"), proxy=False)
    system.start()
    try:
        load = os.getloadavg()
        result = asyncio.run(measure(system, args.rows))
        result["loadavg_start"] = [round(x, 2) for x in load]
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        system.stop()
    table = "\n".join(f"{k:28} {v}" for k, v in result.items())
    publish_results("intake_history_import", result, table, note="shared 2-core machine")


if __name__ == "__main__":
    main()
