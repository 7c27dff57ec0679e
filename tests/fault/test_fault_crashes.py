"""Longer faults (``slow``): tracking and reporting killed mid-work, the broker unreachable, all under load.

Same checks as the quick suite (``tests/fault/checks.py``), plus for tracking: every
acknowledged dispatch leads to exactly one first-round rectification order.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.fault_checks import assert_all_accepted, assert_invariants, generator, settled
from tests.support.oracles import read_lifecycle
from tests.support.system import System

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_broker_unreachable_then_back_during_load(system: System) -> None:
    """The broker 'stops' for everyone (connections reset, new ones refused) and comes back with its data."""
    gen = generator(system, seed=808)
    load = asyncio.create_task(gen.run_rate(rate=40, duration_s=15))
    await asyncio.sleep(3)
    await asyncio.to_thread(system.cut_link)
    await asyncio.sleep(8)
    await asyncio.to_thread(system.restore_link)
    await load
    assert_all_accepted(gen)
    await settled(system, gen.result.accepted, timeout_s=240)


async def test_reporting_killed_mid_load_recounts_exactly(system: System) -> None:
    gen = generator(system, seed=909)
    load = asyncio.create_task(gen.run_rate(rate=100, duration_s=10))
    await asyncio.sleep(4)
    await asyncio.to_thread(system.kill, "reporting")
    await asyncio.sleep(2)
    await asyncio.to_thread(system.start_service, "reporting")
    await load
    assert_all_accepted(gen)
    await settled(system, gen.result.accepted, timeout_s=240)


async def test_tracking_killed_while_acknowledgements_flow(system: System) -> None:
    gen = generator(system, seed=1001)
    await gen.run_rate(rate=100, duration_s=4)
    assert_all_accepted(gen)
    await settled(system, gen.result.accepted)
    async with httpx.AsyncClient(timeout=30) as client:
        acks = asyncio.create_task(gen.play_departments(client, late_round=True))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(system.kill, "tracking")
        await acks
    await asyncio.to_thread(system.start_service, "tracking")
    acknowledged = sum(
        n for key, n in gen.result.actions.items() if key.startswith("acknowledge_") and key.endswith("_200")
    )
    assert acknowledged > 50
    deadline = time.monotonic() + 180
    while True:
        facts = await read_lifecycle(system.bootstrap_servers, system.lifecycle_topic)
        ordered_hazards = {hazard for (hazard, round_no) in facts.ordered if round_no == 1}
        acked_hazards = {
            facts.dispatch_hazard[d][0] for d in facts.acknowledged if d in facts.dispatch_hazard
        }
        missing = acked_hazards - ordered_hazards
        if len(acked_hazards) >= acknowledged and not missing:
            break
        assert time.monotonic() < deadline, (
            f"{len(missing)} acknowledged hazards without a rectification order"
        )
        await asyncio.sleep(2)
    await assert_invariants(system)
    await settled(system, gen.result.accepted)
