"""What the fault suite checks after every fault: everything accounted for, nothing done twice.

* every report intake accepted has exactly one ``hazard.reported`` event, and dispatch decided
  it: dispatched, or a linked duplicate, fixed on site, or referred to the operators;
* over the whole topic (distinct event ids; a relay resending the same event is allowed):
  no hazard reported by two events, routed twice, acknowledged twice, overdue twice,
  escalated twice at one level, ordered twice in one round, or closed twice;
* reporting's totals equal a recount from the topic: hazards (reported + duplicates),
  dispatches, acknowledged dispatches and closed hazards;
* at every look while the system settles, not only at the end: no figure of reporting's summary
  (per department, community and category, and the totals) is negative or above its whole, no
  rate outside 0..1 (``services.reporting.domain.bound_problems``).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.loadgen import Accepted, BehaviourMix, LoadGenerator
from services.reporting.domain import COUNT_FIELDS, Counts, bound_problems
from shared.reference import PACKAGED_DATA_DIR
from tests.support.oracles import TopicFacts, account, invariant_problems, read_lifecycle, reporting_totals
from tests.support.system import System

FAST_CATEGORIES = ("road_hazard", "illegal_structure")
"""Categories whose receipt deadline is one wall-clock minute here, so overdue and escalation fire in tests."""


def fast_deadline_reference(directory: Path) -> Path:
    """A copy of the reference data in which FAST_CATEGORIES are overdue one minute after dispatch."""
    shutil.copytree(PACKAGED_DATA_DIR, directory)
    path = directory / "categories.yaml"
    data = yaml.safe_load(path.read_text())
    for category in data["categories"]:
        if category["code"] in FAST_CATEGORIES:
            category["receipt_deadline"] = {"minutes": 1, "working_time": False}
            category.pop("urgency", None)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return directory


def generator(system: System, *, seed: int, **options: Any) -> LoadGenerator:
    """A load generator bound to the system's services and principals."""
    options.setdefault("behaviour", BehaviourMix(batch_share=0.3, batch_min=5, batch_max=30))
    return LoadGenerator(
        intake=system.url("intake"),
        dispatch=system.url("dispatch"),
        tracking=system.url("tracking"),
        reporting=system.url("reporting"),
        principals=system.principals,
        reference=system.reference,
        seed=seed,
        **options,
    )


def recount(facts: TopicFacts) -> dict[str, int]:
    """The figures reporting must show, counted from the topic."""
    return {
        "hazards": len(facts.reported),
        "dispatched": len(facts.dispatch_ids),
        "acknowledged": len(facts.acknowledged),
        "closed": len(facts.closed),
    }


def reporting_view(totals: dict[str, Any] | None) -> dict[str, int] | None:
    """The same figures from reporting's summary totals."""
    if totals is None:
        return None
    return {
        "hazards": int(totals.get("reported") or 0) + int(totals.get("duplicates") or 0),
        "dispatched": int(totals.get("dispatched") or 0),
        "acknowledged": int(totals.get("acknowledged") or 0),
        "closed": int(totals.get("closed") or 0),
    }


BOUNDED_GROUPINGS = ("department", "community", "category")
RATES = ("overdue_receipt_rate", "rectification_rate", "relapse_rate")


def figure_problems(group_by: str, summary: dict[str, Any]) -> list[str]:
    """Figures of a summary answer that are negative or above their whole (empty: none)."""
    problems: list[str] = []
    for group in [*summary.get("groups", []), {"key": "totals", **summary.get("totals", {})}]:
        values = {name: int(group.get(name) or 0) for name in COUNT_FIELDS if name != "overdue_ended"}
        ended = (
            int(group.get("overdue_receipts") or 0)
            - values["acknowledged_late"]
            - values["receipt_overdue_open"]
        )
        counts = Counts(**values, overdue_ended=ended)
        problems += [f"{group_by} {group['key']}: {p}" for p in bound_problems(counts)]
        for where in (group, group.get("previous_period") or {}, group.get("year_earlier") or {}):
            for rate in RATES:
                value = where.get(rate)
                if value is not None and not 0 <= value <= 1:
                    problems.append(f"{group_by} {group['key']}: {rate} = {value} outside 0..1")
    return problems


async def reporting_bounds(client: httpx.AsyncClient, base: str, supervisor: Any) -> list[str]:
    """Figures out of bounds in reporting's summaries (last 30 days) by department, community, category."""
    problems: list[str] = []
    for group_by in BOUNDED_GROUPINGS:
        try:
            response = await client.get(
                f"{base}/api/v1/reports/summary", params={"group_by": group_by}, headers=supervisor.headers
            )
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            problems += figure_problems(group_by, response.json())
    return problems


@dataclass
class Outcome:
    """The settled state after a fault."""

    facts: TopicFacts
    accounting: dict[str, Any]
    reporting: dict[str, int] | None
    recount: dict[str, int]


async def settled(
    system: System, accepted: Iterable[Accepted], *, timeout_s: float = 180.0, check_reporting: bool = True
) -> Outcome:
    """Wait until every accepted hazard is decided and reporting agrees with the topic; fail with the evidence."""
    accepted = list(accepted)
    supervisor = system.principal("supervisor")
    deadline = time.monotonic() + timeout_s
    problems: list[str] = ["not checked yet"]
    outcome: Outcome | None = None
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < deadline:
            facts = await read_lifecycle(system.bootstrap_servers, system.lifecycle_topic)
            accounting = account(accepted, facts)
            expected = recount(facts)
            seen = reporting_view(await reporting_totals(client, system.url("reporting"), supervisor))
            outcome = Outcome(facts, accounting, seen, expected)
            if check_reporting:  # never, not even while settling (issue 14 item 10)
                out_of_bounds = await reporting_bounds(client, system.url("reporting"), supervisor)
                assert out_of_bounds == [], f"reporting shows figures out of bounds: {out_of_bounds[:10]}"
            problems = list(accounting["problems"])
            if check_reporting and seen != expected:
                problems.append(f"reporting shows {seen}, the topic recounts {expected}")
            if not problems:
                return outcome
            await asyncio.sleep(2.0)
    raise AssertionError(
        "after the fault the system did not settle consistently within "
        f"{timeout_s:.0f}s: {problems}; accounting {outcome.accounting if outcome else None}; "
        f"event types {dict(outcome.facts.types) if outcome else None}"
    )


async def assert_invariants(system: System) -> TopicFacts:
    """Nothing done twice anywhere on the topic."""
    facts = await read_lifecycle(system.bootstrap_servers, system.lifecycle_topic)
    assert invariant_problems(facts) == [], invariant_problems(facts)
    return facts


def assert_all_accepted(gen: LoadGenerator) -> None:
    """Intake accepted every report offered (retries allowed, no refusals)."""
    result = gen.result
    assert result.rejected == {}, (result.rejected, result.errors[:5])
    assert len(result.accepted) == result.offered, (len(result.accepted), result.offered, result.errors[:5])
    report_ids = [a.report_id for a in result.accepted]
    assert len(set(report_ids)) == len(report_ids), "a report was recorded as accepted twice"
