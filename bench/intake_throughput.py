"""Accepted reports per second and latency through intake, single and batch, every one durably committed.

Starts its own PostgreSQL (fsync on) and Tansu on free ports, migrates, and runs intake as a
real process (``python -m services.intake``: uvicorn, the outbox relay publishing to Tansu as
it goes). Load comes from separate client processes so the client does not share intake's
event loop. The client is lean on purpose, as wrk is C: raw asyncio streams speaking HTTP/1.1
keep-alive (one request in flight per connection, Content-Length framed), about 0.1 ms of CPU
per request against ~1 ms for httpx, because it shares the 2 cores with intake, PostgreSQL and
Tansu. Its CPU per report is reported (``client_cpu_ms_per_report``) next to intake's.
Each client writes its result to a file (a result on a uvloop stdout pipe was cut at 64 KiB).

``--replicas`` intake processes (default 2, one per core) share the database and broker, as
replicas behind a load balancer would; each client process talks to one of them.

1. single: ``POST /api/v1/hazards`` for ``--seconds`` s from ``--clients`` processes with
   ``--connections`` connections each; reports/s, p50/p99/max latency;
2. batch: ``POST /api/v1/hazards/batch`` with 500 reports per call, ``--batch-connections``
   in flight per client process; reports/s and per-call latency.

At the end the database must hold exactly the accepted reports (count per phase), and the
outbox is timed until the relay has published them all.

``python -m bench.intake_throughput [--seconds 20] [--clients 2] [--connections 16]``; figures are
printed and written to ``bench/results/intake_throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from bench.leanhttp import LeanConnection
from shared.devstack import LocalKafka, LocalPostgres, free_port
from shared.migrate import migrate
from shared.outbox import unpublished_count_query
from shared.reference import load_reference_data

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CATEGORIES = (
    "direct_vent_water_heater",
    "locked_rooftop_door",
    "electrical_fire_hazard",
    "ebike_indoor_charging",
    "road_hazard",
    "gas_leak",
    "illegal_structure",
    "public_security_hazard",
)


# ---------------------------------------------------------------- the load client (a subprocess)


def _reports(rng: random.Random, grid: dict[str, Any], count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for _ in range(count):
        building = rng.randrange(1, 5000)
        digest = hashlib.blake2b(f"{grid['id']}/{building}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest[:4], "big") / 2**32
        v = int.from_bytes(digest[4:], "big") / 2**32
        out.append(
            {
                "report_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "category": rng.choice(CATEGORIES),
                "description": "Hazard found on patrol; owner urged to rectify",
                "location": {
                    "lat": round(grid["lat"] + (2 * u - 1) * 0.0034, 6),
                    "lon": round(grid["lon"] + (2 * v - 1) * 0.0026, 6),
                    "address": f"building {building}",
                    "building_id": f"{grid['id']}-b{building:04d}",
                },
                "grid_id": grid["id"],
                "observed_at": (now - timedelta(minutes=rng.randint(1, 600))).isoformat(),
                "photos": [f"https://img.example.org/{uuid.UUID(int=rng.getrandbits(128)).hex}.jpg"],
                "rectified_on_site": rng.random() < 0.12,
            }
        )
    return out


async def _client(spec: dict[str, Any]) -> dict[str, Any]:
    """Send for ``seconds``; returns accepted count, latencies and error counts."""
    rng = random.Random(spec["seed"])
    reporters = spec["reporters"]
    # Each client process talks to one replica, as behind a load balancer.
    url = spec["urls"][spec["seed"] % len(spec["urls"])]
    host, _, port = url.removeprefix("http://").partition(":")
    batch = spec["mode"] == "batch"
    size = spec["batch_size"] if batch else 1
    path = "/api/v1/hazards/batch" if batch else "/api/v1/hazards"
    latencies: list[float] = []
    accepted = 0
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + spec["seconds"]

    async def worker(n: int) -> None:
        nonlocal accepted
        connection = LeanConnection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                reporter = reporters[rng.randrange(len(reporters))]
                reports = _reports(rng, reporter, size)
                body = json.dumps({"reports": reports} if batch else reports[0]).encode()
                started = time.perf_counter()
                try:
                    status, payload = await connection.post(path, body, reporter["token"])
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                if batch and status == 200:
                    got = json.loads(payload)["accepted"]
                    accepted += got
                    if got != size:
                        errors["batch_items_rejected"] = errors.get("batch_items_rejected", 0) + size - got
                elif not batch and status == 201:
                    accepted += 1
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            connection.close()

    cpu0 = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(spec["connections"])))
    elapsed = time.perf_counter() - started
    return {
        "accepted": accepted,
        "latencies": latencies,
        "errors": errors,
        "elapsed": elapsed,
        "cpu_s": time.process_time() - cpu0,
    }


def client_main(out: Path) -> None:
    """Entry of a load-client process: the spec as JSON on stdin, the result as JSON into ``out``.

    (Not stdout: with uvloop the pipe may be non-blocking, and a large result was cut at 64 KiB.)
    """
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.write_text(json.dumps(asyncio.run(_client(spec))))


# ---------------------------------------------------------------- the stack


def _principals(tmp: Path) -> tuple[Path, list[dict[str, Any]]]:
    reference = load_reference_data()
    entries, reporters = [], []
    for grid in reference.grids:
        token = uuid.uuid4().hex
        entries.append(
            {
                "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                "principal": f"gm-{grid.id}",
                "role": "reporter",
                "grid_id": grid.id,
            }
        )
        reporters.append({"id": grid.id, "token": token, "lat": grid.center.lat, "lon": grid.center.lon})
    path = tmp / "tokens.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path, reporters


def _phase(spec: dict[str, Any], clients: int, tmp: Path) -> dict[str, Any]:
    procs = []
    outs = []
    for n in range(clients):
        out = tmp / f"client-{spec['mode']}-{n}.json"
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.intake_throughput", "--client", str(out)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None
        client.stdin.write(json.dumps({**spec, "seed": spec["seed"] + n}))
        client.stdin.close()
        procs.append(client)
        outs.append(out)
    parts = []
    for proc, out in zip(procs, outs, strict=True):
        if proc.wait(timeout=600) != 0:
            raise RuntimeError(f"load client failed with exit code {proc.returncode}")
        parts.append(json.loads(out.read_text()))
    latencies = sorted(x for p in parts for x in p["latencies"])
    accepted = sum(p["accepted"] for p in parts)
    elapsed = max(p["elapsed"] for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v

    def pct(q: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else 0.0
        )

    return {
        "accepted": accepted,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "reports_per_s": round(accepted / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else 0.0,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0,
        "errors": errors,
        "client_cpu_ms_per_report": round(sum(p["cpu_s"] for p in parts) * 1000 / max(1, accepted), 3),
    }


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


async def _count(dsn: str, query: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def main() -> None:
    """Run both phases and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=2, help="load-client processes")
    parser.add_argument("--connections", type=int, default=16, help="connections per client (single)")
    parser.add_argument("--batch-connections", type=int, default=2, help="connections per client (batch)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=2, help="intake processes (one database, one broker)")
    args = parser.parse_args()
    if args.client:
        client_main(args.client)
        return
    load_at_start = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    tmp.chmod(0o755)
    postgres = LocalPostgres(data_dir=tmp / "pg", port=free_port(), log_path=tmp / "pg.log")
    kafka = LocalKafka(port=free_port(), log_path=tmp / "tansu.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        postgres.start()
        kafka.start()
        url = postgres.url()
        asyncio.run(migrate(url))
        topics = {"lifecycle": "bench-intake-lifecycle", "dead_letter": "bench-intake-dlt"}
        asyncio.run(kafka.create_topics({topics["lifecycle"]: 6, topics["dead_letter"]: 1}))
        tokens, reporters = _principals(tmp)
        bases: list[str] = []
        for n in range(args.replicas):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE__")}
            env.update(
                {
                    "INTAKE__DATABASE__URL": url,
                    "INTAKE__DATABASE__POOL_SIZE": "20",
                    "INTAKE__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "INTAKE__KAFKA__LIFECYCLE_TOPIC": topics["lifecycle"],
                    "INTAKE__KAFKA__DEAD_LETTER_TOPIC": topics["dead_letter"],
                    "INTAKE__KAFKA__IDEMPOTENT_PRODUCER": "false",
                    "INTAKE__HTTP__PORT": str(port),
                    "INTAKE__AUTH__TOKENS_FILE": str(tokens),
                    "INTAKE__LOG_LEVEL": "WARNING",
                    # The load is many reporters at full speed; the limit is not what is measured.
                    "INTAKE__RATE_LIMIT__ENABLED": "false",
                }
            )
            log = (tmp / f"intake-{n}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.intake"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        for base, proc in zip(bases, procs, strict=True):
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"intake did not become ready; see the logs in {tmp}")
                time.sleep(0.3)
        common = {
            "urls": bases,
            "reporters": reporters,
            "seconds": args.seconds,
            "batch_size": args.batch_size,
        }
        dsn = postgres.dsn()
        pids = [proc.pid for proc in procs]
        cpu0 = _cpu_s(pids)
        single = _phase(
            {**common, "mode": "single", "connections": args.connections, "seed": 1}, args.clients, tmp
        )
        after_single = asyncio.run(_count(dsn, "select count(*) from intake.reports"))
        cpu1 = _cpu_s(pids)
        batch = _phase(
            {**common, "mode": "batch", "connections": args.batch_connections, "seed": 1000},
            args.clients,
            tmp,
        )
        stored = asyncio.run(_count(dsn, "select count(*) from intake.reports"))
        cpu2 = _cpu_s(pids)
        # Intake's own CPU per accepted report: the figure that the machine's other load disturbs least.
        single["intake_cpu_ms_per_report"] = round((cpu1 - cpu0) * 1000 / max(1, single["accepted"]), 2)
        batch["intake_cpu_ms_per_report"] = round((cpu2 - cpu1) * 1000 / max(1, batch["accepted"]), 3)
        drain_started = time.perf_counter()
        while asyncio.run(_count(dsn, unpublished_count_query("intake"))) > 0:
            if time.perf_counter() - drain_started > 300:
                break
            time.sleep(0.2)
        drain_s = time.perf_counter() - drain_started
        left = asyncio.run(_count(dsn, unpublished_count_query("intake")))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        kafka.stop()
        postgres.stop()
    # Kept (with the servers' logs) only when the run failed.
    shutil.rmtree(tmp, ignore_errors=True)
    committed_ok = after_single == single["accepted"] and stored - after_single == batch["accepted"]
    result = {
        "machine": {"cpus": os.cpu_count()},
        "settings": vars(args),
        "single": single,
        "batch": batch,
        "stored_reports": stored,
        "every_accepted_report_committed": committed_ok,
        "outbox_drain_after_load_s": round(drain_s, 2),
        "outbox_left": left,
        "load_average_1m_at_start": load_at_start,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "targets": {
            "single_reports_per_s_ge_1000": single["reports_per_s"] >= 1000,
            "single_p99_lt_100ms": single["p99_ms"] < 100,
            "batch_reports_per_s_ge_5000": batch["reports_per_s"] >= 5000,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intake_throughput.json").write_text(json.dumps(result, indent=2))
    print("| phase | accepted | reports/s | p50 ms | p99 ms | max ms | intake CPU ms/report | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, phase in (("single", single), (f"batch ({args.batch_size}/call)", batch)):
        print(
            f"| {name} | {phase['accepted']:,} | {phase['reports_per_s']:,} | {phase['p50_ms']} | "
            f"{phase['p99_ms']} | {phase['max_ms']} | {phase['intake_cpu_ms_per_report']} | "
            f"{phase['errors'] or '-'} |"
        )
    print(f"stored reports: {stored:,}; every accepted report committed: {committed_ok}")
    print(f"outbox drained {drain_s:.1f} s after the load ({left} left)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
