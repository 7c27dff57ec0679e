"""The department desk's list: ``GET /api/v1/dispatches?status=pending`` for one department with 10,000 open.

One dispatch process (private PostgreSQL with fsync on, private Tansu) over a dispatch schema
filled directly in PostgreSQL: one department with ``--open`` pending dispatches (default 10,000),
each with the report's description, address and photos kept by dispatch (dispatch_0006), plus
``--others`` dispatches of the other departments and older, closed states around them. The desk's
request (the pending page the page polls, ``limit=200``; also ``limit=500``, the API's largest page,
and a deep page ``offset=9800``) is timed over HTTP, one after another, by the department's token.
Target (#17): p99 under 200 ms.

    flock /tmp/hazard-bench.lock .venv/bin/python -m bench.dispatch_desk_list --requests 300

Printed and written to ``bench/results/dispatch_desk_list.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from bench._stack import private_stack, publish_results
from shared.db import create_engine
from shared.devstack import free_port
from shared.migrate import migrate
from shared.settings import DatabaseSettings

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-desk-fire"
DEPARTMENT = "fire"
OTHERS = ("police", "gas", "roads", "urban_management", "safety_supervision", "housing_rental")

FILL_HAZARDS = """
INSERT INTO dispatch.hazards (hazard_id, category, community_id, grid_id, urgency, queue, referral_reason,
                              reported_at, updated_at, description, address, building_id, reporter_id, photos)
SELECT md5('h' || i)::uuid, 'blocked_fire_passage', 'liuyue', 'liuyue-' || lpad((1 + i % 12)::text, 2, '0'),
       NULL, 'dispatched', NULL, now() - i * interval '1 minute', now(),
       '消防通道被杂物堵塞，第 ' || i || ' 号楼东侧，需尽快清理', '六约路' || (i % 500) || '号', 'LY-' || (i % 500),
       'gm-liuyue-' || lpad((1 + i % 12)::text, 2, '0') || '-1',
       jsonb_build_array('http://127.0.0.1:8101/api/v1/photos/' || md5('p' || i)::uuid,
                         'http://127.0.0.1:8101/api/v1/photos/' || md5('q' || i)::uuid)
FROM generate_series(1, CAST(:n AS integer)) AS i
"""

FILL_DISPATCHES = """
INSERT INTO dispatch.dispatches (dispatch_id, hazard_id, department_id, rule_id, category, community_id, grid_id,
                                 status, receipt_deadline, deadline_minutes, deadline_working_time, reason,
                                 dispatched_by, created_at, acknowledged_at, on_time)
SELECT md5('d' || i)::uuid, md5('h' || i)::uuid,
       CASE WHEN i <= :open THEN :department ELSE (CAST(:others AS text[]))[1 + i % :nothers] END,
       'r-blocked-fire-passage', 'blocked_fire_passage', 'liuyue', 'liuyue-' || lpad((1 + i % 12)::text, 2, '0'),
       CASE WHEN i <= :open THEN 'pending' WHEN i % 3 = 0 THEN 'pending' ELSE 'acknowledged' END,
       now() + ((i * 7919) % 20000 - 2000) * interval '1 minute', 120, true, 'routed',
       'system', now() - i * interval '1 minute',
       CASE WHEN i > :open AND i % 3 <> 0 THEN now() END, CASE WHEN i > :open AND i % 3 <> 0 THEN true END
FROM generate_series(1, CAST(:n AS integer)) AS i
"""

# The department's history: closed dispatches (acknowledged long ago) that the pending list must skip.
FILL_HISTORY = """
INSERT INTO dispatch.dispatches (dispatch_id, hazard_id, department_id, rule_id, category, community_id, grid_id,
                                 status, receipt_deadline, deadline_minutes, deadline_working_time, reason,
                                 dispatched_by, created_at, acknowledged_at, on_time)
SELECT md5('old' || i)::uuid, md5('oldh' || i)::uuid, :department, 'r-blocked-fire-passage', 'blocked_fire_passage',
       'liuyue', 'liuyue-01', CASE WHEN i % 10 = 0 THEN 'returned' ELSE 'acknowledged' END,
       now() - i * interval '1 hour', 120, true, 'routed', 'system', now() - i * interval '1 hour' - interval '2 hours',
       now() - i * interval '1 hour', true
FROM generate_series(1, CAST(:n AS integer)) AS i
"""


def _fill(url: str, *, open_: int, others: int, history: int) -> None:
    async def run() -> None:
        engine = create_engine(DatabaseSettings(url=url))
        try:
            async with engine.begin() as conn:
                n = open_ + others
                await conn.execute(sa.text(FILL_HAZARDS), {"n": n})
                await conn.execute(
                    sa.text(FILL_DISPATCHES),
                    {
                        "n": n,
                        "open": open_,
                        "department": DEPARTMENT,
                        "others": list(OTHERS),
                        "nothers": len(OTHERS),
                    },
                )
                await conn.execute(sa.text(FILL_HISTORY), {"n": history, "department": DEPARTMENT})
            async with engine.begin() as conn:
                await conn.execute(sa.text("ANALYZE dispatch.hazards"))
                await conn.execute(sa.text("ANALYZE dispatch.dispatches"))
        finally:
            await engine.dispose()

    asyncio.run(run())


def _wait_ready(base: str, proc: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"dispatch did not become ready; see {logs}")
        time.sleep(0.3)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _time(client: httpx.Client, params: dict[str, Any], requests: int, expect: int) -> dict[str, Any]:
    for _ in range(5):  # warm-up: plans, pools
        client.get("/api/v1/dispatches", params=params)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get("/api/v1/dispatches", params=params)
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"list answered {answer.status_code}: {answer.text[:300]}")
    body = answer.json()
    items = body["items"]
    if len(items) != expect or any(
        i["department_id"] != DEPARTMENT or i["status"] != "pending" for i in items
    ):
        raise RuntimeError(f"unexpected page: {len(items)} items")
    if any(i["report"] is None or not i["report"]["description"] for i in items):
        raise RuntimeError("the page lacks the report's description")
    deadlines = [i["receipt_deadline"] for i in items]
    if deadlines != sorted(deadlines):
        raise RuntimeError("the page is not in receipt-deadline order")
    ordered = sorted(latencies)
    return {
        "params": params,
        "requests": requests,
        "items": len(items),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(_percentile(ordered, 0.95) * 1000, 1),
        "p99_ms": round(_percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "bytes": len(answer.content),
    }


def main() -> None:
    """Fill the schema, start dispatch, time the desk's pages, write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=10_000, help="pending dispatches of the department")
    parser.add_argument("--others", type=int, default=90_000, help="dispatches of other departments")
    parser.add_argument("--history", type=int, default=50_000, help="closed dispatches of the department")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page shape")
    args = parser.parse_args()
    load_at_start = round(os.getloadavg()[0], 2)
    with (
        private_stack("desk") as (postgres, kafka),
        tempfile.TemporaryDirectory(prefix="bench-desk-") as tmp,
    ):
        work = Path(tmp)
        asyncio.run(migrate(postgres.url()))
        started = time.perf_counter()
        _fill(postgres.url(), open_=args.open, others=args.others, history=args.history)
        fill_s = time.perf_counter() - started
        tokens = work / "tokens.yaml"
        entry = {
            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "principal": "dept-fire",
            "role": "department",
            "department_id": DEPARTMENT,
        }
        tokens.write_text(yaml.safe_dump([entry]))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH__")}
        env.update(
            {
                "DISPATCH__DATABASE__URL": postgres.url(),
                "DISPATCH__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "DISPATCH__KAFKA__IDEMPOTENT_PRODUCER": "false",
                "DISPATCH__HTTP__PORT": str(port),
                "DISPATCH__AUTH__TOKENS_FILE": str(tokens),
                "DISPATCH__LOG_LEVEL": "WARNING",
            }
        )
        log_path = work / "dispatch.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.dispatch"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc, log_path)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                pages = {
                    "desk_page_200": _time(client, {"status": "pending", "limit": 200}, args.requests, 200),
                    "largest_page_500": _time(
                        client, {"status": "pending", "limit": 500}, args.requests, 500
                    ),
                    "deep_page_offset_9800": _time(
                        client,
                        {"status": "pending", "limit": 200, "offset": args.open - 200},
                        args.requests,
                        200,
                    ),
                }
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    result: dict[str, Any] = {
        "open_dispatches_of_department": args.open,
        "other_dispatches": args.others,
        "closed_dispatches_of_department": args.history,
        "fill_seconds": round(fill_s, 1),
        "pages": pages,
        "target_p99_ms": 200,
        "load_average_at_start": load_at_start,
    }
    lines = [
        f"desk list, {args.open:,} pending dispatches of one department "
        f"(+{args.others:,} of others, +{args.history:,} closed); {args.requests} requests each",
        f"{'page':<24}{'items':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'bytes':>10}",
    ]
    for name, page in pages.items():
        lines.append(
            f"{name:<24}{page['items']:>7}{page['p50_ms']:>9}{page['p95_ms']:>9}{page['p99_ms']:>9}"
            f"{page['max_ms']:>9}{page['bytes']:>10}"
        )
    publish_results("dispatch_desk_list", result, "\n".join(lines))


if __name__ == "__main__":
    main()
