"""Does the local broker's CPU grow with its log at a constant load, with no service at all? (#16)

Starts the local stack's broker (Tansu, memory storage) on a port of its own, produces
``--rate`` records/s of 600 B with random keys to a 6-partition topic for ``--seconds``, and
``--groups`` consumer groups fetch and commit them as the services do. Prints the broker's CPU
(% of one core, from ``/proc``) per 20 s window: if it climbs while records in and out stay
constant, a long benchmark's latency rise is the broker's, not ours.

    python -m bench.broker_growth --rate 1000 --seconds 300 --groups 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.devstack.broker import LocalKafka

WINDOW_S = 20.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _consume(servers: str, group: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    consumer = AIOKafkaConsumer(
        "growth",
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            n = sum(len(records) for records in batch.values())
            if n:
                counts[group] += n
                await consumer.commit()
    finally:
        await consumer.stop()


async def run(rate: int, seconds: float, groups: int, port: int) -> None:
    broker = LocalKafka(port=port, log_path=Path(tempfile.mkdtemp()) / "tansu.log")
    broker.start()
    try:
        await broker.create_topics({"growth": 6})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        await producer.start()
        stop = asyncio.Event()
        counts = {f"g{i}": 0 for i in range(groups)}
        tasks = [asyncio.create_task(_consume(broker.bootstrap_servers, g, stop, counts)) for g in counts]
        body, sent, start = os.urandom(600), 0, time.monotonic()
        pid = broker.pid
        assert pid is not None
        window_start, window_cpu = start, _cpu_s(pid)
        print("t_s  sent  consumed(min over groups)  broker % of one core", flush=True)
        while (now := time.monotonic()) - start < seconds:
            while sent < int((now - start) * rate):
                await producer.send("growth", body, key=str(uuid.uuid4()).encode())
                sent += 1
            if now - window_start >= WINDOW_S:
                cpu = _cpu_s(pid)
                share = 100 * (cpu - window_cpu) / (now - window_start)
                print(f"{now - start:4.0f} {sent:7d} {min(counts.values()):7d} {share:6.1f}", flush=True)
                window_start, window_cpu = now, cpu
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="records/s produced")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--groups", type=int, default=4, help="consumer groups (the services)")
    parser.add_argument("--port", type=int, default=39123)
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.seconds, args.groups, args.port))


if __name__ == "__main__":
    main()
