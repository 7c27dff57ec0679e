"""What every per-service benchmark does around its measurement: a private stack, the load, the results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared import events as ev
from shared.devstack import LocalKafka, LocalPostgres, free_port

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def private_postgres(name: str, *, settings: dict[str, str] | None = None) -> Iterator[LocalPostgres]:
    """A PostgreSQL (fsync on) of this benchmark's own, on a free port; removed afterwards.

    ``settings``: more ``postgresql.conf`` lines (e.g. ``pg_stat_statements`` preloaded).
    """
    base = Path(tempfile.mkdtemp(prefix=f"hazard-bench-{name}-"))
    base.chmod(0o755)  # the server runs as another OS user when we are root
    postgres = LocalPostgres(
        data_dir=base / "pg", port=free_port(), log_path=base / "pg.log", extra_settings=settings
    )
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_stack(
    name: str, *, pg_settings: dict[str, str] | None = None
) -> Iterator[tuple[LocalPostgres, LocalKafka]]:
    """A private PostgreSQL and Tansu broker, both on free ports; stopped and removed afterwards."""
    with private_postgres(name, settings=pg_settings) as postgres:
        kafka = LocalKafka(port=free_port(), log_path=Path(postgres.data_dir).parent / "tansu.log")
        try:
            kafka.start()
            yield postgres, kafka
        finally:
            kafka.stop()


async def produce_events(bootstrap: str, topic: str, events: Sequence[ev.AnyEvent]) -> float:
    """Put events on a topic keyed by hazard, as the outbox relays do; returns the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        request_timeout_ms=40_000,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = []
        for event in events:
            pending.append(
                await producer.send(topic, value=ev.dump_event(event), key=str(event.hazard_id).encode())
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def publish_results(name: str, result: dict[str, Any], table: str, *, note: str | None = None) -> None:
    """Print the figures table and write ``bench/results/<name>.json``."""
    result["machine"] = {"cpus": os.cpu_count(), **({"note": note} if note else {})}
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
