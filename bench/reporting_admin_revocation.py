"""A revoked token: how long until every replica of every service refuses it (#18; target 5 s).

On a private PostgreSQL and Tansu broker, runs ``--reporting`` reporting processes (the first hosts
the admin API; reporting writes the admin schema) and ``--dispatch`` dispatch processes, each as
its own least-privileged database role, as in production. Each trial creates a department token
through the admin API, waits until every replica accepts it, revokes it, and polls every replica
(every 20 ms) until it answers 401; the delay is from the revoke's answer (the change committed) to
each replica's first 401. Reported: p50 / p99 / max over trials x replicas.

``python -m bench.reporting_admin_revocation [--trials N] [--reporting R] [--dispatch D]``;
figures in ``bench/results/reporting_admin_revocation.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench._stack import private_stack, publish_results
from shared.auth import hash_token
from shared.devstack import free_port
from shared.migrate import migrate
from shared.roles import role_url

ROOT = Path(__file__).resolve().parent.parent
OPERATOR = "bench-operator-token"
POLL_S = 0.02


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _start(
    service: str, url: str, bootstrap: str, topics: tuple[str, str], tokens: Path
) -> tuple[Any, int]:
    port = free_port()
    prefix = service.upper() + "__"
    env = {k: v for k, v in os.environ.items() if "__" not in k}
    env.update(
        {
            f"{prefix}DATABASE__URL": role_url(url, service),
            f"{prefix}KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            f"{prefix}KAFKA__LIFECYCLE_TOPIC": topics[0],
            f"{prefix}KAFKA__DEAD_LETTER_TOPIC": topics[1],
            f"{prefix}KAFKA__IDEMPOTENT_PRODUCER": "false",
            f"{prefix}HTTP__PORT": str(port),
            f"{prefix}AUTH__TOKENS_FILE": str(tokens),
            f"{prefix}LOG_LEVEL": "WARNING",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return proc, port


async def _ready(client: httpx.AsyncClient, port: int) -> None:
    for _ in range(900):
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=3)).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"service on port {port} never became ready")


def _probe_path(service: str) -> str:
    return "/api/v1/dispatches" if service == "dispatch" else "/api/v1/reports/campaigns"


async def _until(
    client: httpx.AsyncClient, service: str, port: int, token: str, *, known: bool, timeout_s: float
) -> float:
    """Monotonic time of the first answer saying the token is ``known`` (not 401: a department token
    is 403 on reporting's figures, which still means it authenticated) or not (401)."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}{_probe_path(service)}"
    while True:
        answer = await client.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if (answer.status_code != 401) == known:
            if known and answer.status_code not in (200, 403):
                raise RuntimeError(f"{service}:{port} answered {answer.status_code}")
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service}:{port} still answers {answer.status_code} (known={known})")
        await asyncio.sleep(POLL_S)


async def run(trials: int, reporting: int, dispatch: int) -> dict[str, Any]:
    """Start the replicas and measure ``trials`` revocations."""
    with private_stack("admin-revocation") as (postgres, kafka):
        url = postgres.url()
        await migrate(url)
        topics = (f"bench-lifecycle-{uuid.uuid4().hex[:6]}", f"bench-dlt-{uuid.uuid4().hex[:6]}")
        await kafka.create_topics({topics[0]: 4, topics[1]: 1})
        tokens = Path(postgres.data_dir).parent / "tokens.yaml"
        tokens.write_text(
            yaml.safe_dump(
                [{"token_sha256": hash_token(OPERATOR), "principal": "bench-op", "role": "operator"}]
            )
        )
        tokens.chmod(0o644)
        replicas: list[tuple[str, Any, int]] = []
        try:
            for service, count in (("reporting", reporting), ("dispatch", dispatch)):
                for _ in range(count):
                    proc, port = await _start(service, url, kafka.bootstrap_servers, topics, tokens)
                    replicas.append((service, proc, port))
            async with httpx.AsyncClient() as client:
                for _, _, port in replicas:
                    await _ready(client, port)
                admin_port = replicas[0][2]
                admin = f"http://127.0.0.1:{admin_port}/api/v1/admin"
                operator = {"Authorization": f"Bearer {OPERATOR}"}
                delays: list[float] = []
                per_trial_max: list[float] = []
                for trial in range(trials):
                    name = f"bench-dept-{trial}"
                    created = await client.post(
                        f"{admin}/principals",
                        json={"principal": name, "role": "department", "department_id": "gas"},
                        headers=operator,
                        timeout=30,
                    )
                    created.raise_for_status()
                    token = created.json()["token"]
                    await asyncio.gather(
                        *(_until(client, s, p, token, known=True, timeout_s=30) for s, _, p in replicas)
                    )
                    # Revoke at a random phase of the replicas' 1 s poll.
                    await asyncio.sleep((trial * 0.37) % 1.0)
                    answer = await client.post(
                        f"{admin}/principals/{name}/revoke", headers=operator, timeout=30
                    )
                    answer.raise_for_status()
                    revoked_at = time.monotonic()
                    refused = await asyncio.gather(
                        *(_until(client, s, p, token, known=False, timeout_s=30) for s, _, p in replicas)
                    )
                    trial_delays = [max(0.0, t - revoked_at) for t in refused]
                    delays.extend(trial_delays)
                    per_trial_max.append(max(trial_delays))
        finally:
            for _, proc, _ in replicas:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            for _, proc, _ in replicas:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=60)
                except TimeoutError:
                    proc.kill()
    return {
        "trials": trials,
        "replicas": {"reporting": reporting, "dispatch": dispatch},
        "poll_interval_s": 1.0,
        "probe_interval_s": POLL_S,
        "refused_after_s": {
            "p50": round(statistics.median(delays), 3),
            "p99": round(_percentile(delays, 0.99), 3),
            "max": round(max(delays), 3),
            "every_replica_p99": round(_percentile(per_trial_max, 0.99), 3),
        },
        "target_s": 5.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.reporting_admin_revocation", description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--reporting", type=int, default=2)
    parser.add_argument("--dispatch", type=int, default=2)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.trials, args.reporting, args.dispatch))
    r = result["refused_after_s"]
    table = "\n".join(
        [
            "| revoked token refused (from the revoke's answer) | value |",
            "| --- | --- |",
            f"| replicas | reporting {args.reporting}, dispatch {args.dispatch} |",
            f"| trials x replicas | {args.trials} x {args.reporting + args.dispatch} |",
            f"| p50 / p99 / max per replica | {r['p50']} s / {r['p99']} s / {r['max']} s |",
            f"| p99 until every replica refuses | {r['every_replica_p99']} s (target 5 s) |",
        ]
    )
    publish_results("reporting_admin_revocation", result, table)
    return 0 if r["max"] <= 5.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
