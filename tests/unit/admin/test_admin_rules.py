"""Routing rules one at a time (services/admin/service.py) on an in-memory repository: placement,
422 for names not in force, 409 for taken ids and conflicts, nothing stored on a refusal (#18)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.admin import service
from services.admin.models import NewRule, RuleChange
from shared.auth import Principal, TokenRegistry
from shared.domain_errors import ConflictError, InvalidError, NotFoundError
from shared.reference import load_reference_data
from tests.support.fake_uow import FakeWork

OPERATOR = Principal("op-1", "operator")
T0 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


class FakeAdminRepository:
    """The routing part of AdminRepository, in memory."""

    def __init__(self) -> None:
        self.versions: dict[int, list[dict[str, Any]]] = {}
        self.audit: list[tuple[str, str, str, str]] = []
        self.locks = 0

    async def lock(self) -> None:
        self.locks += 1

    async def routing_version(self) -> int:
        return max(self.versions, default=0)

    async def latest_rules(self) -> list[dict[str, Any]] | None:
        return self.versions[max(self.versions)] if self.versions else None

    async def insert_routing_version(self, version: int, rules: list[dict[str, Any]], actor: str) -> None:
        self.versions[version] = rules

    async def record_change(
        self, actor: str, action: str, entity: str, entity_id: str, before: Any, after: Any
    ) -> None:
        self.audit.append((actor, action, entity, entity_id))


@pytest.fixture
def live() -> service.Live:
    return service.Live(load_reference_data(), TokenRegistry([]))


@pytest.fixture
def work() -> FakeWork[FakeAdminRepository]:
    return FakeWork(FakeAdminRepository(), now=T0)


def ids(answer: dict[str, Any]) -> list[str]:
    return [r["id"] for r in answer["rules"]]


async def call(
    work: FakeWork[FakeAdminRepository], live: service.Live, use_case: Any, *args: Any
) -> dict[str, Any]:
    async with work() as uow:
        answer: dict[str, Any] = await use_case(uow, live, OPERATOR, *args)
        return answer


async def test_an_override_goes_before_its_generic_rule_and_a_generic_one_before_the_old_generic(
    work: FakeWork[FakeAdminRepository], live: service.Live
) -> None:
    override = await call(
        work,
        live,
        service.add_rule,
        NewRule(id="r-o", category="gas_leak", community_id="silian", department_id="fire"),
    )
    assert ids(override).index("r-o") == ids(override).index("r-gas-leak") - 1
    assert override["version"] == 1
    # A new generic rule to another department: it wins, the old generic rule becomes its fallback,
    # and it stays after the override of its category.
    generic = await call(
        work, live, service.add_rule, NewRule(id="r-g", category="gas_leak", department_id="police")
    )
    order = ids(generic)
    assert order.index("r-o") < order.index("r-g") < order.index("r-gas-leak")
    assert work.repo.audit == [
        ("op-1", "add_rule", "routing_rules", "1"),
        ("op-1", "add_rule", "routing_rules", "2"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"department_id": "nasa"}, "department_id"),
        ({"category": "burning_sofa"}, "category"),
        ({"community_id": "atlantis"}, "community_id"),
        ({"grid_id": "huale-04"}, "grid_id"),
        ({"position": 99}, "position"),
    ],
)
async def test_names_not_in_force_are_422_with_the_field_and_store_nothing(
    work: FakeWork[FakeAdminRepository], live: service.Live, body: dict[str, Any], field: str
) -> None:
    rule = {"id": "r-x", "category": "gas_leak", "community_id": "silian", "department_id": "fire", **body}
    with pytest.raises(InvalidError) as refused:
        await call(work, live, service.add_rule, NewRule.model_validate(rule))
    assert refused.value.code == "validation_failed"
    assert [d["field"] for d in refused.value.details] == [field]
    assert work.repo.versions == {}
    assert work.repo.audit == []


async def test_taken_ids_and_conflicts_are_409(
    work: FakeWork[FakeAdminRepository], live: service.Live
) -> None:
    with pytest.raises(ConflictError) as taken:
        await call(
            work, live, service.add_rule, NewRule(id="r-gas-leak", category="gas_leak", department_id="gas")
        )
    assert taken.value.code == "rule_exists"
    with pytest.raises(ConflictError) as duplicate:
        await call(work, live, service.add_rule, NewRule(id="r-d", category="gas_leak", department_id="gas"))
    assert duplicate.value.code == "rule_conflict"
    assert duplicate.value.details[0]["value"] == "r-gas-leak"
    assert "never be used" in duplicate.value.details[0]["problem"]
    n = len(live.reference.routing_rules)
    with pytest.raises(ConflictError) as late:
        await call(
            work,
            live,
            service.add_rule,
            NewRule(
                id="r-l", category="gas_leak", community_id="silian", department_id="fire", position=n + 1
            ),
        )
    assert late.value.code == "rule_conflict"
    assert "more specific" in late.value.details[0]["problem"]
    # A fallback (same place, another department, after the generic rule) is no conflict.
    fallback = await call(
        work,
        live,
        service.add_rule,
        NewRule(id="r-f", category="gas_leak", department_id="fire", position=n + 1),
    )
    assert ids(fallback)[-1] == "r-f"
    assert work.repo.versions.keys() == {1}


async def test_change_keeps_the_place_and_remove_falls_back(
    work: FakeWork[FakeAdminRepository], live: service.Live
) -> None:
    before = [r.id for r in live.reference.routing_rules]
    changed = await call(
        work,
        live,
        service.change_rule,
        "r-road-hazard",
        RuleChange(category="road_hazard", department_id="urban_management"),
    )
    assert ids(changed) == before
    assert changed["rules"][before.index("r-road-hazard")]["department_id"] == "urban_management"
    moved = await call(
        work,
        live,
        service.change_rule,
        "r-road-hazard",
        RuleChange(category="road_hazard", department_id="roads", position=1),
    )
    assert ids(moved)[0] == "r-road-hazard"
    removed = await call(work, live, service.remove_rule, "r-road-hazard")
    assert "r-road-hazard" not in ids(removed)
    assert removed["version"] == 3
    for use_case, args in (
        (service.remove_rule, ("r-road-hazard",)),
        (service.change_rule, ("r-nothing", RuleChange(category="road_hazard", department_id="roads"))),
    ):
        with pytest.raises(NotFoundError):
            await call(work, live, use_case, *args)
    assert [a[1] for a in work.repo.audit] == ["change_rule", "change_rule", "remove_rule"]
