"""Malformed events on the lifecycle topic: every consumer dead-letters them and keeps going, nothing lost.

Hypothesis mutates valid sample events of every type (fields dropped, replaced by other JSON
values, the type or version changed, bytes truncated or replaced) and the results go to the
topic. Every record ``shared.events.parse_event`` refuses must reach the dead-letter topic
from each of the four consumers, with its origin; a valid report sent after them must still
be dispatched and counted by reporting; every service stays ready.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import EVENT_TYPES, dump_event, parse_event
from tests.abuse.checks import EXAMPLES
from tests.abuse.test_abuse_access import publish, reported_event
from tests.support.factories import make_event
from tests.support.kafka_tools import read_topic
from tests.support.oracles import read_lifecycle, reporting_count
from tests.support.system import SERVICES, System

pytestmark = pytest.mark.integration

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    if isinstance(value, dict):
        for key, inner in value.items():
            paths.append((*prefix, key))
            paths.extend(_paths(inner, (*prefix, key)))
    return paths


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """One valid event, then one or more mutations of it."""
    event_type = draw(st.sampled_from(sorted(EVENT_TYPES)))
    document = json.loads(dump_event(make_event(event_type)))
    kind = draw(st.sampled_from(["drop", "replace", "type", "version", "truncate", "bytes", "non-object"]))
    if kind == "drop":
        path = draw(st.sampled_from(_paths(document)))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    elif kind == "replace":
        path = draw(st.sampled_from(_paths(document)))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(JSON_VALUES)
    elif kind == "type":
        document["event_type"] = draw(st.text(max_size=30))
    elif kind == "version":
        document["schema_version"] = draw(st.integers().filter(lambda v: v != 1))
    raw = json.dumps(document).encode()
    if kind == "truncate":
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]
    elif kind == "bytes":
        raw = draw(st.binary(max_size=500))
    elif kind == "non-object":
        raw = json.dumps(draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))).encode()
    return raw


def generate(count: int) -> list[bytes]:
    """``count`` mutated events, reproducibly."""
    found: list[bytes] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=mutated_events())
    def collect(raw: bytes) -> None:
        found.append(raw)

    collect()
    return found


def _invalid(raw: bytes) -> bool:
    try:
        parse_event(raw)
    except ValidationError:
        return True
    return False


async def _produce(system: System, values: list[bytes]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap_servers, request_timeout_ms=40_000)
    await producer.start()
    try:
        rng = random.Random(3)
        futures = [
            await producer.send(system.lifecycle_topic, value=value, key=str(rng.random()).encode())
            for value in values
        ]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def _not_dead_lettered(system: System, positions: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """(consumer, partition, offset) of the records some consumer has not dead-lettered yet."""
    dead = await read_topic(system.bootstrap_servers, system.dead_letter_topic, timeout_s=30)
    seen = set()
    for record in dead:
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
        if "dlt_origin_offset" in headers:
            seen.add(
                (
                    headers.get("dlt_consumer"),
                    int(headers["dlt_origin_partition"]),
                    int(headers["dlt_origin_offset"]),
                )
            )
    return [
        (service, partition, offset)
        for service in SERVICES
        for partition, offset in positions
        if (service, partition, offset) not in seen
    ]


async def _check_consumers_survive(system: System, count: int) -> None:
    records = generate(count)
    invalid = [raw for raw in records if _invalid(raw)]
    assert len(invalid) > count // 2, "most mutations must break the event"
    positions = await _produce(system, invalid)
    # A real hazard after the garbage: it must be dispatched and counted.
    supervisor = system.principal("supervisor")
    async with httpx.AsyncClient(timeout=10) as client:
        before = await reporting_count(client, system.url("reporting"), supervisor) or 0
        after_event = reported_event(
            system, grid="hongmian-05", category="locked_rooftop_door", rng=random.Random(5)
        )
        await publish(system, [after_event])
        deadline = time.monotonic() + 120
        while True:
            facts = await read_lifecycle(system.bootstrap_servers, system.lifecycle_topic)
            counted = await reporting_count(client, system.url("reporting"), supervisor) or 0
            if str(after_event.hazard_id) in facts.dispatched_ts and counted > before:
                break
            assert time.monotonic() < deadline, (
                "a valid report after the garbage was not dispatched and counted"
            )
            await asyncio.sleep(1)
    # The valid report shows dispatch and reporting have passed the garbage; tracking and intake
    # may still be on it (a consumer that joined its group late starts from the earliest offset).
    deadline = time.monotonic() + 120
    while True:
        missing = await _not_dead_lettered(system, positions)
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert missing == [], f"{len(missing)} malformed records not dead-lettered, e.g. {missing[:5]}"
    for service in SERVICES:
        system.wait_ready(service, timeout_s=30)


async def test_malformed_events_are_dead_lettered_by_every_consumer_which_keeps_going(system: System) -> None:
    await _check_consumers_survive(system, EXAMPLES * 4)


@pytest.mark.slow
async def test_many_malformed_events(system: System) -> None:
    await _check_consumers_survive(system, EXAMPLES * 40)
