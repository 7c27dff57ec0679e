"""Several processes of one service in one consumer group, on the test's database, broker and topics."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from shared.devstack.ports import free_port
from tests.support import processes
from tests.support.kafka_tools import wait_for
from tests.support.processes import service_env

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "dispatch", "tracking", "reporting")


def _start(
    service: str, db_url: str, bootstrap: str, topics: dict[str, str], group: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = service_env(service, db_url, bootstrap, topics, port, KAFKA__GROUP_ID=group, LOG_LEVEL="WARNING")
    return processes.launch(service, env, log), port


@contextlib.asynccontextmanager
async def replicas(
    service: str, count: int, *, db_url: str, bootstrap: str, topics: dict[str, str], log_dir: Path
) -> AsyncIterator[list[int]]:
    """Start `count` processes of `service` in one new consumer group; yields their HTTP ports once all are ready.

    Each is ready only once it holds partitions, so when this yields every process has a share.
    """
    group = f"{service}-{os.getpid()}-{time.monotonic_ns()}"
    procs = [
        _start(service, db_url, bootstrap, topics, group, log_dir / f"{service}-{n}.log")
        for n in range(count)
    ]
    try:
        for proc, port in procs:

            async def ready(proc: subprocess.Popen[bytes] = proc, port: int = port) -> bool:
                assert proc.poll() is None, f"{service} exited with {proc.returncode}; see {log_dir}"
                try:
                    async with httpx.AsyncClient() as client:
                        answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
                except httpx.TransportError:
                    return False
                return answer.status_code == 200

            await wait_for(ready, timeout_s=90, interval_s=0.3)
        yield [port for _, port in procs]
    finally:
        processes.stop((proc for proc, _ in procs), timeout_s=30)


async def applied(service: str, port: int) -> float:
    """How many events this process applied (its ``hazard_events_consumed_total{outcome="applied"}``)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    found = re.search(rf'hazard_events_consumed_total\{{outcome="applied",service="{service}"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0
