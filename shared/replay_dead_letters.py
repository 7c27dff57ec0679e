"""Replay dead letters: republish them for the service that failed them, and for no other.

``python -m shared.replay_dead_letters --bootstrap-servers HOST:PORT
[--all | --reason R ... | --service S ... | --event-id ID ...] [--dry-run]``

Reads the dead-letter topic from its beginning to its current end, keeps the dead letters that
match (``--reason``, ``--service`` and ``--event-id`` may be given several times and together;
``--all`` takes every one), and publishes each once on the lifecycle topic with its original
key, value and event headers plus ``replay_for: <service that dead-lettered it>``. That service
applies it (its inbox skips it if it was applied meanwhile); every other service skips it without
reading it, so nothing is applied twice. A dead letter that was cut to fit
(``dlt_value_truncated``) is replayed from the original record, read at its origin topic,
partition and offset and checked against ``dlt_original_sha256``.

Run it once the cause is fixed (a deployment, a data correction): a replayed event that fails
again goes back to the dead-letter topic. Running it twice is harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import topics
from shared.deadletter import ORIGINAL_SHA256, REPLAY_FOR, VALUE_TRUNCATED
from shared.kafka import bootstrap_list

# Headers of the original event that travel with the replay (the dlt_* ones describe the failure).
_EVENT_HEADERS = ("event_type", "event_id", "hazard_id", "producer", "schema_version")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to replay: every one, or those matching each given criterion."""

    all: bool = False
    reasons: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    event_ids: frozenset[str] = frozenset()

    def matches(self, headers: dict[str, str]) -> bool:
        """Whether a dead letter with these headers is selected."""
        if self.all:
            return True
        checks = (
            (self.reasons, headers.get("dlt_reason")),
            (self.services, headers.get("dlt_consumer")),
            (self.event_ids, headers.get("event_id")),
        )
        given = [(wanted, value) for wanted, value in checks if wanted]
        return bool(given) and all(value in wanted for wanted, value in given)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as read from the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def consumer(self) -> str | None:
        """The service that dead-lettered it."""
        return self.headers.get("dlt_consumer")

    @property
    def identity(self) -> tuple[str, str]:
        """The same failure, however often it was dead-lettered: (service, event id or origin)."""
        h = self.headers
        origin = f"{h.get('dlt_origin_topic')}:{h.get('dlt_origin_partition')}:{h.get('dlt_origin_offset')}"
        return (self.consumer or "", h.get("event_id") or origin)

    def describe(self) -> str:
        h = self.headers
        return (
            f"event {h.get('event_id', '?')} ({h.get('event_type', '?')}) for {self.consumer}: "
            f"{h.get('dlt_reason', '?')}, dead-letter offset {self.partition}:{self.offset}"
        )


def select(dead_letters: Sequence[DeadLetter], selection: Selection) -> list[DeadLetter]:
    """The dead letters to replay, each failure once (the first dead letter of it), in topic order."""
    chosen: dict[tuple[str, str], DeadLetter] = {}
    for dead in dead_letters:
        if dead.consumer and selection.matches(dead.headers):
            chosen.setdefault(dead.identity, dead)
    return list(chosen.values())


def replay_headers(dead: DeadLetter, dead_letter_topic: str) -> dict[str, str]:
    """The headers a replayed event carries: the event's own, and whom it is for."""
    headers = {name: dead.headers[name] for name in _EVENT_HEADERS if name in dead.headers}
    assert dead.consumer is not None
    headers[REPLAY_FOR] = dead.consumer
    headers["replayed_from"] = f"{dead_letter_topic}:{dead.partition}:{dead.offset}"
    return headers


def _decoded(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: value.decode(errors="replace") for name, value in headers or ()}


async def read_dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every record of the dead-letter topic, from its beginning to its end as of now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_list(bootstrap), enable_auto_commit=False, request_timeout_ms=40_000
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise SystemExit(f"replay: topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[DeadLetter] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                found.extend(
                    DeadLetter(r.partition, r.offset, r.key, r.value or b"", _decoded(r.headers))
                    for r in records
                    if r.offset < ends[tp]
                )
        return sorted(found, key=lambda d: (d.partition, d.offset))
    finally:
        await consumer.stop()


async def original_value(bootstrap: str, dead: DeadLetter) -> bytes:
    """The value of the record a bounded dead letter stands for, read at its origin and checked."""
    h = dead.headers
    tp = TopicPartition(h["dlt_origin_topic"], int(h["dlt_origin_partition"]))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_list(bootstrap),
        enable_auto_commit=False,
        request_timeout_ms=40_000,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, int(h["dlt_origin_offset"]))
        record = await asyncio.wait_for(consumer.getone(tp), timeout=30)
    finally:
        await consumer.stop()
    value: bytes = record.value or b""
    if hashlib.sha256(value).hexdigest() != h.get(ORIGINAL_SHA256):
        raise ValueError(
            f"the record at {tp.topic}:{tp.partition}:{record.offset} is not the one dead-lettered"
        )
    return value


async def replay(
    *,
    bootstrap: str,
    lifecycle_topic: str,
    dead_letter_topic: str,
    selection: Selection,
    dry_run: bool = False,
    out: Any = sys.stdout,
) -> int:
    """Replay the selected dead letters; returns how many were (or, dry, would be) republished."""
    chosen = select(await read_dead_letters(bootstrap, dead_letter_topic), selection)
    messages: list[tuple[DeadLetter, bytes]] = []
    for dead in chosen:
        value = dead.value
        if dead.headers.get(VALUE_TRUNCATED) == "true":
            value = await original_value(bootstrap, dead)
        messages.append((dead, value))
        print(("would replay " if dry_run else "replay ") + dead.describe(), file=out)
    if dry_run:
        print(f"{len(messages)} dead letters would be replayed (dry run: nothing published)", file=out)
        return len(messages)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_list(bootstrap),
        acks="all",
        request_timeout_ms=40_000,
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                lifecycle_topic,
                key=dead.key,
                value=value,
                headers=[(k, v.encode()) for k, v in replay_headers(dead, dead_letter_topic).items()],
            )
            for dead, value in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    print(f"{len(messages)} dead letters replayed onto {lifecycle_topic}", file=out)
    return len(messages)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shared.replay_dead_letters",
        description="Republish dead letters for the service that failed them (and no other).",
    )
    parser.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port]")
    parser.add_argument("--lifecycle-topic", default=topics.LIFECYCLE)
    parser.add_argument("--dead-letter-topic", default=topics.DEAD_LETTER)
    parser.add_argument("--all", action="store_true", help="every dead letter")
    parser.add_argument("--reason", action="append", default=[], help="invalid, failed or rejected")
    parser.add_argument("--service", action="append", default=[], help="the service that dead-lettered it")
    parser.add_argument("--event-id", action="append", default=[], help="an event id")
    parser.add_argument("--dry-run", action="store_true", help="list what would be replayed, publish nothing")
    args = parser.parse_args(argv)
    if not (args.all or args.reason or args.service or args.event_id):
        parser.error("say what to replay: --all, --reason, --service or --event-id")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit code 0 when the selected dead letters were replayed (or listed)."""
    args = _arguments(argv)
    selection = Selection(
        all=args.all,
        reasons=frozenset(args.reason),
        services=frozenset(args.service),
        event_ids=frozenset(args.event_id),
    )
    asyncio.run(
        replay(
            bootstrap=args.bootstrap_servers,
            lifecycle_topic=args.lifecycle_topic,
            dead_letter_topic=args.dead_letter_topic,
            selection=selection,
            dry_run=args.dry_run,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
